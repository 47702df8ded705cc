"""The direct-regression variant (the paper's hand-pose setting): the model and its offset likelihood
(:mod:`vl4pose.regression.model`) and its demonstrations on procedural hands and LSPET
(:mod:`vl4pose.regression.demo`, run as ``python -m vl4pose.regression.demo``)."""
