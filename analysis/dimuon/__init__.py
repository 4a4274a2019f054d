"""A Z -> mu mu analysis for Dask workers: generate ROOT files, select opposite-charge muon
pairs, histogram their invariant mass, fit the Z peak, and plot it.

Modules: ``generate`` (the dataset), ``analyze`` (uproot + dask-awkward + vector + hist on
the workers), ``fit`` (iminuit), ``plot`` (mplhep).
"""
