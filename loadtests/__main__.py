"""`python -m loadtests`: the load generator, baseline echo servers and the benchmark runner."""

from loadtests.cli import main

raise SystemExit(main())
