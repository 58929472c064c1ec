package main

// unknownSettings returns the OPR_EXECUTOR_* names in environ that no
// setting reads.
func unknownSettings(environ []string) []string {
	return nil
}
