package api

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Response is Keylime's v2 response envelope: every body is {"code": …, "status": …, "results": …}.
type Response struct {
	Code    int             `json:"code"`
	Status  string          `json:"status"`
	Results json.RawMessage `json:"results"`
}

// Envelope is the envelope a server writes; Results is marshalled as is (an empty object when nil).
type Envelope struct {
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Results any    `json:"results"`
}

// StatusSuccess is the status text of every successful Keylime response.
const StatusSuccess = "Success"

// EmptyResults is the results value of an error or of a success without data: an empty JSON object.
var EmptyResults = struct{}{}

// Success returns the envelope of a successful response carrying results.
func Success(results any) Envelope {
	if results == nil {
		results = EmptyResults
	}
	return Envelope{Code: http.StatusOK, Status: StatusSuccess, Results: results}
}

// Failure returns the envelope of an error response with an empty results object.
func Failure(code int, status string) Envelope {
	return Envelope{Code: code, Status: status, Results: EmptyResults}
}

// Error is a non-2xx Keylime response as seen by a client: the HTTP code and the envelope's status text.
type Error struct {
	Code   int
	Status string
}

func (e *Error) Error() string {
	if e.Status == "" {
		return fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Status)
}

// Decode reads results into v; a JSON null or absent results (the Rust agent sends null for empty results)
// leaves v untouched.
func (r *Response) Decode(v any) error {
	if len(r.Results) == 0 || string(r.Results) == "null" || v == nil {
		return nil
	}
	if err := json.Unmarshal(r.Results, v); err != nil {
		return fmt.Errorf("decode results: %w", err)
	}
	return nil
}
