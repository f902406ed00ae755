"""fastrnn's benchmark (python -m fastrnn.bench): shapes, contenders, measurement, report."""
