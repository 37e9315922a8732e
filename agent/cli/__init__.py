"""The ``edgetune`` command line: thin commands over the library functions of the same name.

One module per group of commands (:mod:`.tuning`, :mod:`.data`, :mod:`.models`,
:mod:`.device`, :mod:`.fleet`); what they print is in :mod:`.output`, shared options in
:mod:`.options`, and the group with its error handling in :mod:`.root`. Only this package
turns errors into messages (see :func:`agent.cli.root.main`).
"""

from __future__ import annotations

from agent.cli import data, device, fleet, models, tuning
from agent.cli.root import cli, main

__all__ = ["cli", "main"]

for _command in (tuning.probe, tuning.kernels, tuning.tune, tuning.best, tuning.runs, tuning.presets,
                 data.collect, data.import_, data.export, models.train, models.eval_,
                 device.upload, device.daemon, device.hook, device.status, device.queue, fleet.fleet):
    cli.add_command(_command)
