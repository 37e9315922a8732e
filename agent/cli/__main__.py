"""``python -m agent.cli``: the same as the ``edgetune`` command."""

from agent.cli import main

main()
