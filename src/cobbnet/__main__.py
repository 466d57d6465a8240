from cobbnet.cli import main

main()
