"""Reads every Parquet table `drover analyze` wrote with pandas (pyarrow) and Python polars, as a
user would, and checks each against the CSV written beside it: same columns, rows and values."""
import glob
import os
import sys

import numpy as np
import pandas as pd
import polars as pl

tables = sys.argv[1]
paths = sorted(glob.glob(os.path.join(tables, "*.parquet")))
assert paths, f"no Parquet table in {tables}"
for path in paths:
    csv = pd.read_csv(path[: -len(".parquet")] + ".csv")
    via_pandas = pd.read_parquet(path)
    via_polars = pl.read_parquet(path)
    assert list(via_pandas.columns) == list(csv.columns) == via_polars.columns, path
    assert len(via_pandas) == len(csv) == via_polars.height, path
    for col in csv.columns:
        a, b = via_pandas[col], csv[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, equal_nan=True), (path, col)
        else:
            assert [str(x) for x in a.fillna("")] == [str(x) for x in b.fillna("")], (path, col)
    print(f"ok: {os.path.basename(path)}: {len(csv)} rows x {len(csv.columns)} columns (pandas {pd.__version__}, polars {pl.__version__})")
