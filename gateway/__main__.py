"""`python -m gateway` is `lockgw`."""

from gateway.cli import main

raise SystemExit(main())
