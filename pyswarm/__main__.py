from pyswarm.cli.main import main

main()
