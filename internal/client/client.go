// Package client holds typed HTTP clients for Keylime's agent, registrar and verifier APIs, used by the
// tenant, the verifier and the agent. Every call takes a context, speaks one negotiated API version and
// returns *api.Error for a non-2xx answer.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/keylime-go/keylime/internal/api"
)

// maxResponse bounds response bodies (IMA logs in quotes can be large).
const maxResponse = 256 << 20

// base is the shared part of every client: an HTTP client, a base URL and an API version.
type base struct {
	http    *http.Client
	url     string // scheme://host:port, no trailing slash
	version string // "2.6"
}

func (b *base) path(p string) string { return b.url + "/v" + b.version + p }

// bodyPool holds response buffers; ones that grew beyond maxPooledBody (a large IMA log) are dropped.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 256 << 10

// do sends a JSON request (body may be nil) and decodes the envelope's results into out (may be nil).
func (b *base) do(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	// Response bodies are read into pooled buffers: decoding copies what it keeps, so a verifier
	// polling thousands of agents does not allocate a fresh body buffer per quote.
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBody {
			bodyPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponse)); err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, url, err)
	}
	raw := buf.Bytes()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var env api.Response
		jsonErr := json.Unmarshal(raw, &env)
		e := &api.Error{Code: resp.StatusCode, Status: env.Status}
		if jsonErr != nil || env.Status == "" {
			e.Status = strings.TrimSpace(truncate(string(raw), 200))
		}
		return fmt.Errorf("%s %s: %w", method, url, e)
	}
	if resp.StatusCode == http.StatusNoContent || out == nil {
		return nil
	}
	// One pass: the results decode straight into out (a quote's IMA log is not scanned twice).
	env := struct {
		Results any `json:"results"`
	}{Results: out}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%s %s: invalid JSON response: %w", method, url, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// StatusCode returns the HTTP code of an *api.Error inside err, or 0.
func StatusCode(err error) int {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}
