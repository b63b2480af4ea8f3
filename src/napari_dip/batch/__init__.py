"""Restore many files with the same settings: on Dask, resumable, with a report.

``napari-dip batch INPUT... --task denoise --out DIR`` on the command line, or from Python::

    from napari_dip.batch import restore_files
    rows = restore_files(["data/*.tif"], task="denoise", out="restored", iterations=1500)

Each input is restored through the same path as ``napari-dip denoise|super-resolve|inpaint``
(:func:`napari_dip.cli.restore_file`); each result is written atomically next to a JSON
record (input hash, settings, seed, stop reason, iterations, seconds, version) that lets a
rerun skip what is done. No Qt, no napari here.

========================  ==============================================================
``inputs``                files, folders, globs -> items (input, mask, output)
``records``               the JSON record, hashes, atomic writes, "is it done?"
``job``                   one file: skip or restore, write, return its report row
``report``                report.csv and report.html with thumbnails
``progress``              fit progress to the client, cancel requests to the fits
``run``                   ``restore_files``: Dask (a local cluster or a scheduler) or here
``cluster``               local cluster: a worker per GPU (dask-cuda), per core, or one
``command``               ``napari-dip batch``
========================  ==============================================================
"""

from .run import fit_defaults, restore_files

__all__ = ["restore_files", "fit_defaults"]
