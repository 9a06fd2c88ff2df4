from molediff.cli import main

raise SystemExit(main())
