package transport

import (
	"log"
	"strings"

	"github.com/rs/zerolog"
)

type zlWriter struct{ log zerolog.Logger }

func (w zlWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newStdLogger routes net/http's internal messages (TLS handshake errors, …) to zerolog at debug level.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zlWriter{l.With().Str("component", "http").Logger()}, "", 0)
}
