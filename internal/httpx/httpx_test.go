package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/keylime-go/keylime/internal/api"
)

func testRouter() *Router {
	echo := func(r *Request) (any, error) {
		return map[string]string{"id": r.Param("id"), "version": r.Version}, nil
	}
	return NewRouter(zerolog.Nop(), []string{"2.1", "2.2", "2.6"}, []Route{
		{Method: http.MethodGet, Path: "/version", Unversioned: true, Handler: func(*Request) (any, error) { return "v", nil }},
		{Method: http.MethodGet, Path: "/agents/{id}", Handler: echo},
		{Method: http.MethodDelete, Path: "/agents/{id}", Handler: func(*Request) (any, error) { return nil, Errorf(http.StatusNotFound, "agent gone") }},
		{Method: http.MethodGet, Path: "/info", MinVersion: "2.2", Handler: echo},
		{Method: http.MethodPost, Path: "/created", Handler: func(*Request) (any, error) { return Reply{Code: http.StatusCreated}, nil }},
		{Method: http.MethodGet, Path: "/boom", Handler: func(*Request) (any, error) { return nil, errors.New("secret detail") }},
	})
}

func do(t *testing.T, h http.Handler, method, path, body string) (int, api.Response, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	var env api.Response
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, rec.Body.String())
		}
		if env.Code != rec.Code {
			t.Errorf("%s %s: envelope code %d != HTTP %d", method, path, env.Code, rec.Code)
		}
	}
	return rec.Code, env, rec.Header()
}

func TestRouter(t *testing.T) {
	h := testRouter()
	for _, tc := range []struct {
		name, method, path string
		code               int
		status             string // substring of the envelope status
		results            string // exact results JSON, when set
	}{
		{"unversioned", "GET", "/version", 200, "Success", `"v"`},
		{"versioned with param", "GET", "/v2.1/agents/abc", 200, "Success", `{"id":"abc","version":"2.1"}`},
		{"trailing slash", "GET", "/v2.6/agents/abc/", 200, "Success", `{"id":"abc","version":"2.6"}`},
		{"bare major is newest", "GET", "/v2/agents/abc", 200, "Success", `{"id":"abc","version":"2.6"}`},
		{"unknown version names supported", "GET", "/v9.9/agents/abc", 400, "API version not supported: v9.9 (supported: 2.1, 2.2, 2.6)", ""},
		{"version between supported", "GET", "/v2.4/agents/abc", 400, "API version not supported", ""},
		{"route newer than version", "GET", "/v2.1/info", 404, "not found", ""},
		{"route at min version", "GET", "/v2.2/info", 200, "Success", ""},
		{"handler error code", "DELETE", "/v2.1/agents/x", 404, "agent gone", "{}"},
		{"wrong method", "PUT", "/v2.1/agents/x", 405, "not allowed", ""},
		{"unknown path", "GET", "/v2.1/nothing", 404, "not found", ""},
		{"versioned route without version", "GET", "/agents/abc", 404, "not found", ""},
		{"reply code", "POST", "/v2.1/created", 201, "Created", "{}"},
		{"internal error hides cause", "GET", "/v2.1/boom", 500, "internal error", "{}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, env, hdr := do(t, h, tc.method, tc.path, "")
			if code != tc.code {
				t.Fatalf("code %d, want %d (status %q)", code, tc.code, env.Status)
			}
			if !strings.Contains(env.Status, tc.status) {
				t.Errorf("status %q, want it to contain %q", env.Status, tc.status)
			}
			if strings.Contains(env.Status, "secret") {
				t.Errorf("internal error leaked its cause: %q", env.Status)
			}
			if tc.results != "" && string(env.Results) != tc.results {
				t.Errorf("results %s, want %s", env.Results, tc.results)
			}
			if code == 405 && hdr.Get("Allow") == "" {
				t.Error("405 without Allow header")
			}
			if hdr.Get("Content-Type") != "application/json" {
				t.Errorf("content type %q", hdr.Get("Content-Type"))
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	for _, tc := range []struct {
		name, body string
		max        int64
		code       int
		msg        string
	}{
		{"ok", `{"name":"a","n":1}`, 0, 0, ""},
		{"empty", ``, 0, 400, "empty"},
		{"not json", `{"name":`, 0, 400, "invalid JSON"},
		{"wrong type names field", `{"n":"x"}`, 0, 400, `field "n"`},
		{"trailing data", `{"n":1} {"n":2}`, 0, 400, "trailing"},
		{"too large", `{"name":"` + strings.Repeat("a", 100) + `"}`, 50, 413, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hr := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var b body
			err := DecodeJSON(&Request{Request: hr}, &b, tc.max)
			if tc.code == 0 {
				if err != nil || b.Name != "a" || b.N != 1 {
					t.Fatalf("got %+v, %v", b, err)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || he.Code != tc.code || !strings.Contains(he.Msg, tc.msg) {
				t.Fatalf("err = %#v, want code %d with %q", err, tc.code, tc.msg)
			}
		})
	}
}
