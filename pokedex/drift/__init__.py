"""Drift detection shared by export (which builds the reference) and the service (which watches its traffic).

Torch-free and free of serving dependencies (numpy and Pillow through ``pokedex.preprocess`` only), at the model
and data layer: ``records`` (what one prediction tells us), ``stats`` (two-sample statistics), ``signals``,
``reference`` (built at export), ``calibration`` (thresholds from held-out data), ``monitor`` (the sliding
window) and ``predlog`` (the optional rotating prediction log).
"""
