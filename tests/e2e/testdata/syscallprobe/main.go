// Command syscallprobe writes a line through the write system call: built
// for 386 it makes 32-bit system calls (Test32BitSyscallsRefused).
package main

import "os"

func main() {
	os.Stdout.WriteString("probe-ran\n")
}
