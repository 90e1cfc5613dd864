from farebox.cli.main import main

main()
