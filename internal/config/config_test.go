package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestExampleMatchesDefaults loads keylime.toml.example: it must parse, contain every key, and state
// exactly the defaults.
func TestExampleMatchesDefaults(t *testing.T) {
	path := filepath.Join("..", "..", "keylime.toml.example")
	got, err := Load(path, nil, nil)
	if err != nil {
		t.Fatalf("load example: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(normalise(got), normalise(want)) {
		t.Errorf("keylime.toml.example differs from Default():\n got %+v\nwant %+v", got, want)
	}
	// Every key of every section must be documented in the example.
	text := readFile(t, path)
	root := reflect.TypeOf(Config{})
	for i := 0; i < root.NumField(); i++ {
		sec := root.Field(i)
		if !strings.Contains(text, "["+tagName(sec)+"]") {
			t.Errorf("example lacks section [%s]", tagName(sec))
		}
		for j := 0; j < sec.Type.NumField(); j++ {
			key := tagName(sec.Type.Field(j))
			if !strings.Contains(text, "\n"+key+" = ") {
				t.Errorf("example lacks key %s.%s", tagName(sec), key)
			}
		}
	}
}

// normalise treats an empty and a nil slice alike.
func normalise(c Config) Config {
	if len(c.Registrar.CertSubjectAlternativeNames) == 0 {
		c.Registrar.CertSubjectAlternativeNames = nil
	}
	if len(c.Verifier.CertSubjectAlternativeNames) == 0 {
		c.Verifier.CertSubjectAlternativeNames = nil
	}
	if len(c.Agent.RevocationActions) == 0 {
		c.Agent.RevocationActions = nil
	}
	return c
}

func TestLoadFixtures(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		wantErr    string
	}{
		{"unknown key is named", "unknown_key.toml", "unknown key agent.tpm_hash"},
		{"unknown section is named", "unknown_section.toml", "unknown key agnet"},
		{"wrong type", "bad_type.toml", "port"},
		{"bad duration", "bad_duration.toml", "not a duration"},
		{"missing file", "does_not_exist.toml", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tc.file), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadGoodWithOverrides(t *testing.T) {
	env := []string{
		"KEYLIME_AGENT_CONTACT_PORT=19002",
		"KEYLIME_REGISTRAR_TLS_PORT=18891",
		"KEYLIME_AGENT_ENABLE_AGENT_MTLS=false",
		"KEYLIME_CONFIG=/ignored",
		"PATH=/usr/bin",
	}
	cfg, err := Load(filepath.Join("testdata", "good.toml"), env, []string{"registrar.port=28890", "agent.uuid=generate"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"file value", cfg.Agent.TPM, "swtpm:/tmp/swtpm.sock"},
		{"float seconds", cfg.Agent.RegistrationRetryInterval.D(), 500 * time.Millisecond},
		{"list", cfg.Registrar.CertSubjectAlternativeNames, []string{"registrar.example", "10.0.0.1"}},
		{"env int", cfg.Agent.ContactPort, 19002},
		{"env multi-word key", cfg.Registrar.TLSPort, 18891},
		{"env bool", cfg.Agent.EnableAgentMTLS, false},
		{"flag beats file", cfg.Registrar.Port, 28890},
		{"flag beats file (string)", cfg.Agent.UUID, "generate"},
		{"default kept", cfg.Agent.RegistrarPort, 8890},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestOverrideErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env, sets []string
		unknown   bool
	}{
		{name: "env unknown key", env: []string{"KEYLIME_AGENT_NOPE=1"}, unknown: true},
		{name: "env bad int", env: []string{"KEYLIME_AGENT_PORT=x"}},
		{name: "env bad bool", env: []string{"KEYLIME_AGENT_ENABLE_AGENT_MTLS=maybe"}},
		{name: "set unknown key", sets: []string{"agent.nope=1"}, unknown: true},
		{name: "set without section", sets: []string{"port=1"}, unknown: true},
		{name: "set without value", sets: []string{"agent.port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("", tc.env, tc.sets)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.unknown != errors.Is(err, ErrUnknownKey) {
				t.Errorf("errors.Is(ErrUnknownKey) = %v for %v", !tc.unknown, err)
			}
		})
	}
}

// Variables of other tools that share the KEYLIME_ prefix (no such section) are left alone; a set
// override with an unknown section is still an error (above).
func TestEnvOfOtherTools(t *testing.T) {
	cfg, err := Load("", []string{"KEYLIME_VM_TEST=1", "KEYLIME_NOPE_PORT=1", "KEYLIME_X=1", "KEYLIME_AGENT_PORT=9100"}, nil)
	if err != nil || cfg.Agent.Port != 9100 {
		t.Fatalf("Load = %v (agent port %d)", err, cfg.Agent.Port)
	}
	if _, err := Load("", nil, []string{"nope.port=1"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("--set nope.port: %v", err)
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"2": 2 * time.Second, "0.25": 250 * time.Millisecond, "1m": time.Minute, "150ms": 150 * time.Millisecond} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.D() != want {
			t.Errorf("%q: got %v, %v; want %v", in, d.D(), err, want)
		}
	}
	for _, bad := range []string{"-1", "-2s", "soon", ""} {
		var d Duration
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPath(t *testing.T) {
	if got := Path("/var/lib/keylime", "cv_ca/cacert.crt"); got != "/var/lib/keylime/cv_ca/cacert.crt" {
		t.Errorf("relative: %s", got)
	}
	if got := Path("/var/lib/keylime", "/etc/x.pem"); got != "/etc/x.pem" {
		t.Errorf("absolute: %s", got)
	}
}
