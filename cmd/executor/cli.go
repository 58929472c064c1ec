package main

import "io"

// runCLI handles the command line when it asks for something other than the
// daemon: it returns handled false to run the daemon.
func runCLI(args []string, stdout, stderr io.Writer) (code int, handled bool) {
	return 0, false
}
