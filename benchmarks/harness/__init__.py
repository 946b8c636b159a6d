"""The benchmark harness, one job per module: ``protocol`` (the YAML protocol files), ``options`` (the command-line
options every benchmark shares), ``data`` (datasets, encoding, students), ``train`` (one run and its epoch selection),
``pool`` (runs in worker processes), ``journal`` (the run journal), ``stats`` (mean ± std and comparisons),
``report`` (tables and result files), ``figure`` (the plots) and ``alternating`` (step times of several trainers
taken one step each in turn)."""
