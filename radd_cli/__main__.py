from radd_cli.cli import main

main()
