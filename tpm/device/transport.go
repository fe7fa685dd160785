package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

const (
	// headerSize is the TPM response header: tag (2), size (4), response code (4).
	headerSize = 10
	// maxResponse bounds a response; real ones stay below 8 KiB.
	maxResponse = 1 << 20
	// commandTimeout bounds one command on a socket (swtpm RSA key generation takes < 1 s).
	commandTimeout = 2 * time.Minute
)

// errBadResponse means a TPM response header announced an impossible size.
var errBadResponse = errors.New("malformed TPM response")

// socketTPM speaks the TPM command stream over one persistent unix socket connection, like
// swtpm's data channel. A broken connection is dropped and dialled again on the next command.
type socketTPM struct {
	mu   sync.Mutex
	path string
	conn net.Conn // nil after a failure or Close
}

// dialSocket connects to a TPM command socket.
func dialSocket(path string) (*socketTPM, error) {
	s := &socketTPM{path: path}
	if err := s.dial(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *socketTPM) dial() error {
	c, err := net.DialTimeout("unix", s.path, 10*time.Second)
	if err != nil {
		return err
	}
	s.conn = c
	return nil
}

// Send writes one command and reads its whole response (header first, then exactly the rest).
func (s *socketTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		if err := s.dial(); err != nil {
			return nil, err
		}
	}
	rsp, err := roundTrip(s.conn, cmd)
	if err != nil {
		// The stream position is unknown now: start over with a new connection next time.
		_ = s.conn.Close()
		s.conn = nil
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return rsp, nil
}

// roundTrip sends cmd on c and reads one response.
func roundTrip(c net.Conn, cmd []byte) ([]byte, error) {
	if err := c.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	if _, err := c.Write(cmd); err != nil {
		return nil, err
	}
	return readResponse(c)
}

// readResponse reads one TPM response from r: the header, then the announced remainder.
func readResponse(r io.Reader) ([]byte, error) {
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("%w: size %d", errBadResponse, size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(r, rsp[headerSize:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

// release hangs up after a command sequence; the next Send dials again.
func (s *socketTPM) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

// Close closes the connection.
func (s *socketTPM) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// openDevice opens a TPM character device such as /dev/tpmrm0.
func openDevice(path string) (transport.TPMCloser, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err // "open /dev/tpmrm0: no such file or directory"
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w (mode %s)", path, ErrNotDevice, fi.Mode())
	}
	return transport.FromReadWriteCloser(f), nil
}

// Response codes after which the TPM did not start the command, so sending it again is safe.
const (
	rcYielded = 0x908 // TPM_RC_YIELDED
	rcTesting = 0x90a // TPM_RC_TESTING: self-test of an algorithm in progress
	rcRetry   = 0x922 // TPM_RC_RETRY: swtpm answers this to the first quote after start, for one
)

// maxRetries bounds resending (about 5 s with the backoff below).
const maxRetries = 16

// retryTPM resends a command while the TPM answers that it could not start it, and adds the time each
// command took, resends included, to busy.
type retryTPM struct {
	transport.TPMCloser
	busy *atomic.Int64
}

// Send sends cmd, resending with exponential backoff (1 ms to 500 ms) on YIELDED, TESTING and RETRY.
func (r retryTPM) Send(cmd []byte) ([]byte, error) {
	start := time.Now()
	defer func() { r.busy.Add(int64(time.Since(start))) }()
	delay := time.Millisecond
	for attempt := 0; ; attempt++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || len(rsp) < headerSize || attempt == maxRetries {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcYielded, rcTesting, rcRetry:
			time.Sleep(delay)
			delay = min(2*delay, 500*time.Millisecond)
		default:
			return rsp, nil
		}
	}
}

// release passes a hang-up through to a socket transport.
func (r retryTPM) release() {
	if s, ok := r.TPMCloser.(interface{ release() }); ok {
		s.release()
	}
}
