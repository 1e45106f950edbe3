from podforge.cli import main

raise SystemExit(main())
