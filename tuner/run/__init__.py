"""The running side: trials trained. The objective, this host made ready for a study, workers
and the local launcher, signals, Slurm and `tuner submit`, the `tuner search` driver and
`tuner confirm`'s re-runs.

It imports the deciding side (:mod:`tuner.search`: space, pruners, study, storage, attributes,
warm starts, notes), which never imports it. Commands import what they need from the modules.
"""
