// Package httpx is the small HTTP layer shared by the roles' servers: a router for Keylime's versioned
// paths (/v2.1/… to /v2.6/…, /v2/…, unversioned /version), handlers that return results or errors, one
// adapter that writes the {code, status, results} envelope, and one size-limited JSON body decoder.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
)

// Error is an error a handler returns to send a specific HTTP code; Msg is what the client sees.
type Error struct {
	Code  int
	Msg   string
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %v", e.Msg, e.Cause)
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error with code and a formatted client message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 *Error whose message is msg followed by the cause.
func BadRequest(msg string, cause error) *Error {
	if cause != nil {
		msg = msg + ": " + cause.Error()
	}
	return &Error{Code: http.StatusBadRequest, Msg: msg, Cause: cause}
}

// Reply lets a handler choose a success code other than 200 (201, 202, 204).
type Reply struct {
	Code    int
	Status  string
	Results any
}

// Request is what a handler gets: the HTTP request, the path parameters and the API version of the path
// ("" for unversioned routes).
type Request struct {
	*http.Request
	Params  map[string]string
	Version string
}

// Param returns a path parameter.
func (r *Request) Param(name string) string { return r.Params[name] }

// Handler answers a request with results (wrapped in a 200 envelope), a Reply, or an error.
type Handler func(r *Request) (any, error)

// Route is one entry of a role's route table.
type Route struct {
	Method string
	// Path is the path below the version prefix, e.g. "/agents/{id}"; segments in braces are parameters.
	Path string
	// Unversioned routes (GET /version) are served without a /vX.Y prefix.
	Unversioned bool
	// MinVersion, when set, is the first API version that has this route (e.g. "2.2" for /agent/info).
	MinVersion string
	Handler    Handler
}

// Router dispatches requests to a route table and writes every answer as a Keylime envelope.
type Router struct {
	routes   []Route
	versions []string
	log      zerolog.Logger
}

// NewRouter returns a router over routes serving the given API versions.
func NewRouter(log zerolog.Logger, versions []string, routes []Route) *Router {
	return &Router{routes: routes, versions: versions, log: log}
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	start := time.Now()
	code := rt.serve(w, hr)
	rt.log.Debug().Str("method", hr.Method).Str("path", hr.URL.Path).Int("code", code).
		Dur("took", time.Since(start)).Str("remote", hr.RemoteAddr).Msg("request")
}

func (rt *Router) serve(w http.ResponseWriter, hr *http.Request) int {
	path := hr.URL.Path
	version := ""
	rest := path
	if v, after, ok := splitVersion(path); ok {
		if !rt.supports(v) {
			return rt.write(w, hr, nil, Errorf(http.StatusBadRequest, "%s: v%s (supported: %s)",
				api.VersionNotSupported, v, strings.Join(rt.versions, ", ")))
		}
		version, rest = v, after
		if version == majorOf(version) { // bare major version: /v2/…
			version = rt.versions[len(rt.versions)-1]
		}
	}
	segs := splitPath(rest)
	var allowed []string
	for _, route := range rt.routes {
		if route.Unversioned != (version == "") {
			continue
		}
		if route.MinVersion != "" && version != "" && api.CompareVersions(version, route.MinVersion) < 0 {
			continue
		}
		params, ok := match(splitPath(route.Path), segs)
		if !ok {
			continue
		}
		if route.Method != hr.Method {
			allowed = append(allowed, route.Method)
			continue
		}
		req := &Request{Request: hr, Params: params, Version: version}
		res, err := route.Handler(req)
		return rt.write(w, hr, res, err)
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return rt.write(w, hr, nil, Errorf(http.StatusMethodNotAllowed, "method %s not allowed on %s", hr.Method, path))
	}
	return rt.write(w, hr, nil, Errorf(http.StatusNotFound, "not found: %s", path))
}

func (rt *Router) supports(v string) bool {
	for _, s := range rt.versions {
		if s == v || majorOf(s) == v {
			return true
		}
	}
	return false
}

func (rt *Router) write(w http.ResponseWriter, hr *http.Request, res any, err error) int {
	env := api.Success(res)
	if err != nil {
		var he *Error
		if !errors.As(err, &he) {
			he = &Error{Code: http.StatusInternalServerError, Msg: "internal error", Cause: err}
		}
		ev := rt.log.Info()
		if he.Code >= 500 {
			ev = rt.log.Error()
		}
		ev.Err(err).Str("method", hr.Method).Str("path", hr.URL.Path).Int("code", he.Code).Msg("request failed")
		env = api.Failure(he.Code, he.Msg)
	} else if rep, ok := res.(Reply); ok {
		env = api.Envelope{Code: rep.Code, Status: rep.Status, Results: rep.Results}
		if env.Status == "" {
			env.Status = http.StatusText(rep.Code)
		}
		if env.Results == nil {
			env.Results = api.EmptyResults
		}
	}
	WriteEnvelope(w, env)
	return env.Code
}

// WriteEnvelope writes env as the JSON body with env.Code as the HTTP status (204 gets no body).
func WriteEnvelope(w http.ResponseWriter, env api.Envelope) {
	if env.Code == http.StatusNoContent {
		w.WriteHeader(env.Code)
		return
	}
	body, err := json.Marshal(env)
	if err != nil {
		env = api.Failure(http.StatusInternalServerError, "internal error: cannot encode response")
		body, _ = json.Marshal(env)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(env.Code)
	_, _ = w.Write(body)
}

// splitVersion splits "/v2.1/agents/x" into "2.1" and "/agents/x". Paths that do not start with a
// /v<digit> segment are unversioned.
func splitVersion(path string) (string, string, bool) {
	if !strings.HasPrefix(path, "/v") || len(path) < 3 || path[2] < '0' || path[2] > '9' {
		return "", path, false
	}
	seg, rest, _ := strings.Cut(path[2:], "/")
	return seg, "/" + rest, true
}

func majorOf(v string) string {
	major, _, _ := strings.Cut(v, ".")
	return major
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func match(pattern, segs []string) (map[string]string, bool) {
	if len(pattern) != len(segs) {
		return nil, false
	}
	var params map[string]string
	for i, p := range pattern {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if segs[i] == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[p[1:len(p)-1]] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// DefaultMaxBody is the default request body limit (1 MiB): registration bodies are a few KiB.
const DefaultMaxBody = 1 << 20

// DecodeJSON decodes the request body into v, limited to max bytes (DefaultMaxBody when 0). A body that is
// too large is a 413, malformed JSON or wrong types a 400 naming the problem; trailing data is refused.
func DecodeJSON(r *Request, v any, max int64) error {
	if max <= 0 {
		max = DefaultMaxBody
	}
	if r.ContentLength > max {
		return Errorf(http.StatusRequestEntityTooLarge, "request body too large (%d bytes, limit %d)", r.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return BadRequest("cannot read request body", err)
	}
	if int64(len(body)) > max {
		return Errorf(http.StatusRequestEntityTooLarge, "request body too large (limit %d bytes)", max)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return Errorf(http.StatusBadRequest, "request body is empty, expected a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Errorf(http.StatusBadRequest, "invalid JSON body: field %q must be %s, not %s", te.Field, te.Type, te.Value)
		}
		return BadRequest("invalid JSON body", err)
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "invalid JSON body: trailing data after the JSON object")
	}
	return nil
}
