package protocol

import (
	"errors"
	"io"
)

// presizeLimit bounds the buffer ReadAll makes from a declared size before reading anything: a larger body grows
// its buffer as it comes, so that a size a peer declares (a runtime's Content-Length, a client's) costs memory
// only once the bytes are sent.
const presizeLimit = 64 << 10

// ReadAll is io.ReadAll starting from a buffer of the size r declared (-1: unknown). The small bodies of most
// executions then take one buffer of their size, where io.ReadAll takes 512 bytes for any, and the collector
// runs that much less often on the warm path.
func ReadAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 || size > presizeLimit {
		return io.ReadAll(r)
	}
	// One byte more, so that reading EOF needs no larger buffer.
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}
