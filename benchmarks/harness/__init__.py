"""The benchmark harness, one job per module: ``protocol`` (the YAML protocol files), ``options`` (the command-line
options every benchmark shares), ``data`` (datasets, encoding, students), ``train`` (one run and its epoch selection),
``pool`` (runs in worker processes), ``journal`` (the run journal), ``stats`` (mean ± std and comparisons),
``report`` (tables and result files) and ``figure`` (the plots)."""
