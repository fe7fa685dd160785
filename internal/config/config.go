// Package config loads keylime.toml: one file with a section per role ([agent], [registrar], [ca], …) using
// Keylime's key names and defaults. Values come, in increasing precedence, from the defaults, the file,
// KEYLIME_<SECTION>_<KEY> environment variables and command-line overrides. Unknown keys are errors that
// name the key, so a typo never silently falls back to a default.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the configuration is read from when neither --config nor KEYLIME_CONFIG names a file.
const DefaultPath = "/etc/keylime/keylime.toml"

// DefaultDir is Keylime's default work directory.
const DefaultDir = "/var/lib/keylime"

// Config is the whole keylime.toml.
type Config struct {
	Agent     Agent     `toml:"agent"`
	Registrar Registrar `toml:"registrar"`
	Verifier  Verifier  `toml:"verifier"`
	Tenant    Tenant    `toml:"tenant"`
	CA        CA        `toml:"ca"`
	// Revocations configures the verifier's revocation notifications.
	Revocations Revocations `toml:"revocations"`
}

// Revocations is the [revocations] section.
type Revocations struct {
	// EnabledRevocationNotifications lists the notifiers: "agent" (POST to the other agents) and
	// "webhook" (POST to webhook_url).
	EnabledRevocationNotifications []string `toml:"enabled_revocation_notifications"`
	WebhookURL                     string   `toml:"webhook_url"`
	// QueueSize bounds the notifications waiting to be sent; the oldest are dropped beyond it.
	QueueSize int `toml:"queue_size"`
}

// Verifier is the [verifier] section.
type Verifier struct {
	// UUID is the verifier id reported as verifier_id.
	UUID       string `toml:"uuid"`
	IP         string `toml:"ip"`
	Port       int    `toml:"port"`
	KeylimeDir string `toml:"keylime_dir"`
	Database   string `toml:"database"`

	TLSDir          string `toml:"tls_dir"`
	ServerKey       string `toml:"server_key"`
	ServerCert      string `toml:"server_cert"`
	TrustedClientCA string `toml:"trusted_client_ca"`
	// ClientKey and ClientCert are presented to agents.
	ClientKey                   string   `toml:"client_key"`
	ClientCert                  string   `toml:"client_cert"`
	CertSubjectAlternativeNames []string `toml:"cert_subject_alternative_names"`

	QuoteInterval      Duration `toml:"quote_interval"`
	RetryInterval      Duration `toml:"retry_interval"`
	MaxRetries         int      `toml:"max_retries"`
	ExponentialBackoff bool     `toml:"exponential_backoff"`
	RequestTimeout     Duration `toml:"request_timeout"`
	MaxUploadSize      int64    `toml:"max_upload_size"`

	// MeasuredBootPolicyName is the measured-boot policy engine: "example" (judge the reference state),
	// "accept-all" or "reject-all". MeasuredBootEvaluate is "once" (per boot log) or "always".
	MeasuredBootPolicyName string `toml:"measured_boot_policy_name"`
	MeasuredBootEvaluate   string `toml:"measured_boot_evaluate"`
	// RequireAllowListSignatures refuses runtime policies that are not DSSE envelopes verified with
	// the runtime_policy_key sent along.
	RequireAllowListSignatures bool `toml:"require_allow_list_signatures"`
	// AgentConnections is "keep-alive" (an idle connection per agent between quotes: least CPU) or
	// "per-quote" (a new connection per quote with TLS session resumption: about 3x the CPU per attestation).
	AgentConnections string `toml:"agent_connections"`
	// IMAFailViolations fails attestation on IMA ToMToU / open-writers violations (accepted by default).
	IMAFailViolations bool `toml:"ima_fail_violations"`
}

// Tenant is the [tenant] section.
type Tenant struct {
	VerifierIP    string `toml:"verifier_ip"`
	VerifierPort  int    `toml:"verifier_port"`
	RegistrarIP   string `toml:"registrar_ip"`
	RegistrarPort int    `toml:"registrar_port"`
	KeylimeDir    string `toml:"keylime_dir"`

	TLSDir          string `toml:"tls_dir"`
	ClientKey       string `toml:"client_key"`
	ClientCert      string `toml:"client_cert"`
	TrustedServerCA string `toml:"trusted_server_ca"`

	// TPMCertStore is a directory of CA certificates that EK certificates must chain to.
	TPMCertStore  string `toml:"tpm_cert_store"`
	RequireEKCert bool   `toml:"require_ek_cert"`

	AcceptTPMHashAlgs       []string `toml:"accept_tpm_hash_algs"`
	AcceptTPMEncryptionAlgs []string `toml:"accept_tpm_encryption_algs"`
	AcceptTPMSigningAlgs    []string `toml:"accept_tpm_signing_algs"`

	MaxRetries         int      `toml:"max_retries"`
	RetryInterval      Duration `toml:"retry_interval"`
	ExponentialBackoff bool     `toml:"exponential_backoff"`
	RequestTimeout     Duration `toml:"request_timeout"`

	// MBRefstate is the measured-boot reference state file that `--mb-policy default` names (relative
	// to keylime_dir), as Keylime's tenant.mb_refstate.
	MBRefstate string `toml:"mb_refstate"`
}

// Agent is the [agent] section: the attested machine.
type Agent struct {
	// UUID is an explicit agent UUID, "generate" (random, remembered in the data directory) or "hash_ek"
	// (lowercase hex SHA-256 of the EK public key PEM, like Keylime's agent).
	UUID        string `toml:"uuid"`
	IP          string `toml:"ip"`
	Port        int    `toml:"port"`
	ContactIP   string `toml:"contact_ip"`
	ContactPort int    `toml:"contact_port"`

	RegistrarIP   string `toml:"registrar_ip"`
	RegistrarPort int    `toml:"registrar_port"`

	KeylimeDir    string `toml:"keylime_dir"`
	AgentDataPath string `toml:"agent_data_path"`

	// TPM is "/dev/tpmrm0" (or another device path) or "swtpm:<unix socket path>".
	TPM              string `toml:"tpm"`
	TPMHashAlg       string `toml:"tpm_hash_alg"`
	TPMEncryptionAlg string `toml:"tpm_encryption_alg"`
	TPMSigningAlg    string `toml:"tpm_signing_alg"`

	EnableAgentMTLS bool   `toml:"enable_agent_mtls"`
	ServerKey       string `toml:"server_key"`
	ServerCert      string `toml:"server_cert"`
	TrustedClientCA string `toml:"trusted_client_ca"`
	PayloadKey      string `toml:"payload_key"`

	IMAMLPath          string `toml:"ima_ml_path"`
	MeasuredBootMLPath string `toml:"measuredboot_ml_path"`

	// Secure payloads: decrypted into <keylime_dir>/secure (a tmpfs of secure_size when
	// mount_secure_tmpfs and the agent may mount), then unzipped and payload_script run.
	SecureSize            string   `toml:"secure_size"`
	MountSecureTmpfs      bool     `toml:"mount_secure_tmpfs"`
	EncKeyname            string   `toml:"enc_keyname"`
	DecPayloadFile        string   `toml:"dec_payload_file"`
	ExtractPayloadZip     bool     `toml:"extract_payload_zip"`
	PayloadScript         string   `toml:"payload_script"`
	PayloadScriptTimeout  Duration `toml:"payload_script_timeout"`
	EnableInsecurePayload bool     `toml:"enable_insecure_payload"`

	// Revocation notifications: messages must verify with revocation_cert ("default": the certificate
	// delivered in the payload); then revocation_actions (looked up in revocation_actions_dir, and in the
	// payload when allow_payload_revocation_actions) run with the message.
	RevocationCert                string   `toml:"revocation_cert"`
	RevocationActions             []string `toml:"revocation_actions"`
	RevocationActionsDir          string   `toml:"revocation_actions_dir"`
	AllowPayloadRevocationActions bool     `toml:"allow_payload_revocation_actions"`

	// RegistrationRetryInterval is the first delay after a failed registration; it doubles up to
	// RegistrationRetryMax and the agent retries for ever.
	RegistrationRetryInterval Duration `toml:"registration_retry_interval"`
	RegistrationRetryMax      Duration `toml:"registration_retry_max"`
}

// Registrar is the [registrar] section.
type Registrar struct {
	IP      string `toml:"ip"`
	Port    int    `toml:"port"`
	TLSPort int    `toml:"tls_port"`

	KeylimeDir string `toml:"keylime_dir"`
	Database   string `toml:"database"`

	// TLSDir holds the CA layout (cacert.crt, server-cert.crt, …); "generate" creates <keylime_dir>/cv_ca on
	// first start, "default" uses it as it is.
	TLSDir          string `toml:"tls_dir"`
	ServerKey       string `toml:"server_key"`
	ServerCert      string `toml:"server_cert"`
	TrustedClientCA string `toml:"trusted_client_ca"`

	// CertSubjectAlternativeNames are extra names and addresses put in a generated server certificate.
	CertSubjectAlternativeNames []string `toml:"cert_subject_alternative_names"`
	MaxUploadSize               int64    `toml:"max_upload_size"`
}

// CA is the [ca] section: the Keylime CA that `tls_dir = "generate"` and `keylime ca` create.
type CA struct {
	CertCountry      string `toml:"cert_country"`
	CertState        string `toml:"cert_state"`
	CertLocality     string `toml:"cert_locality"`
	CertOrganization string `toml:"cert_organization"`
	CertOrgUnit      string `toml:"cert_org_unit"`
	CertCAName       string `toml:"cert_ca_name"`
	CertCALifetime   int    `toml:"cert_ca_lifetime"`
	CertLifetime     int    `toml:"cert_lifetime"`
}

// Default returns the configuration used when the file sets nothing.
func Default() Config {
	return Config{
		Agent: Agent{
			UUID:                          "hash_ek",
			IP:                            "127.0.0.1",
			Port:                          9002,
			ContactIP:                     "127.0.0.1",
			ContactPort:                   9002,
			RegistrarIP:                   "127.0.0.1",
			RegistrarPort:                 8890,
			KeylimeDir:                    DefaultDir,
			AgentDataPath:                 "agent_data",
			TPM:                           "/dev/tpmrm0",
			TPMHashAlg:                    "sha256",
			TPMEncryptionAlg:              "rsa",
			TPMSigningAlg:                 "rsassa",
			EnableAgentMTLS:               true,
			ServerKey:                     "server-private.pem",
			ServerCert:                    "server-cert.crt",
			TrustedClientCA:               "cv_ca/cacert.crt",
			PayloadKey:                    "payload-private.pem",
			IMAMLPath:                     "/sys/kernel/security/ima/ascii_runtime_measurements",
			MeasuredBootMLPath:            "/sys/kernel/security/tpm0/binary_bios_measurements",
			SecureSize:                    "1m",
			MountSecureTmpfs:              true,
			EncKeyname:                    "derived_tci_key",
			DecPayloadFile:                "decrypted_payload",
			ExtractPayloadZip:             true,
			PayloadScript:                 "autorun.sh",
			PayloadScriptTimeout:          Duration(time.Minute),
			RevocationCert:                "default",
			RevocationActionsDir:          "/usr/libexec/keylime",
			AllowPayloadRevocationActions: true,
			RegistrationRetryInterval:     Duration(time.Second),
			RegistrationRetryMax:          Duration(time.Minute),
		},
		Registrar: Registrar{
			IP:              "127.0.0.1",
			Port:            8890,
			TLSPort:         8891,
			KeylimeDir:      DefaultDir,
			Database:        "registrar.db",
			TLSDir:          "generate",
			ServerKey:       "default",
			ServerCert:      "default",
			TrustedClientCA: "default",
			MaxUploadSize:   1 << 20,
		},
		Verifier: Verifier{
			UUID:               "default",
			IP:                 "127.0.0.1",
			Port:               8881,
			KeylimeDir:         DefaultDir,
			Database:           "verifier.db",
			TLSDir:             "generate",
			ServerKey:          "default",
			ServerCert:         "default",
			TrustedClientCA:    "default",
			ClientKey:          "default",
			ClientCert:         "default",
			QuoteInterval:      Duration(2 * time.Second),
			RetryInterval:      Duration(2 * time.Second),
			MaxRetries:         5,
			ExponentialBackoff: true,
			RequestTimeout:     Duration(60 * time.Second),
			MaxUploadSize:      104857600,

			MeasuredBootPolicyName: "example",
			MeasuredBootEvaluate:   "once",
			AgentConnections:       "keep-alive",
		},
		Tenant: Tenant{
			VerifierIP:              "127.0.0.1",
			VerifierPort:            8881,
			RegistrarIP:             "127.0.0.1",
			RegistrarPort:           8891,
			KeylimeDir:              DefaultDir,
			TLSDir:                  "default",
			ClientKey:               "default",
			ClientCert:              "default",
			TrustedServerCA:         "default",
			TPMCertStore:            "/var/lib/keylime/tpm_cert_store",
			RequireEKCert:           true,
			AcceptTPMHashAlgs:       []string{"sha512", "sha384", "sha256"},
			AcceptTPMEncryptionAlgs: []string{"ecc", "rsa"},
			AcceptTPMSigningAlgs:    []string{"ecdsa", "rsassa"},
			MaxRetries:              5,
			RetryInterval:           Duration(2 * time.Second),
			ExponentialBackoff:      true,
			RequestTimeout:          Duration(60 * time.Second),
		},
		Revocations: Revocations{
			EnabledRevocationNotifications: []string{"agent"},
			QueueSize:                      1024,
		},
		CA: CA{
			CertCountry:      "US",
			CertState:        "MA",
			CertLocality:     "Lexington",
			CertOrganization: "Keylime",
			CertOrgUnit:      "53",
			CertCAName:       "Keylime Certificate Authority",
			CertCALifetime:   3650,
			CertLifetime:     365,
		},
	}
}

// Load reads the file at path over the defaults (path "" means defaults only), then applies environment
// overrides from env (os.Environ() form) and then the key=value overrides ("section.key=value").
func Load(path string, env []string, overrides []string) (Config, error) {
	cfg := Default()
	if path != "" {
		md, err := toml.DecodeFile(path, &cfg)
		if err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			sort.Strings(keys)
			return cfg, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
		}
	}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "KEYLIME_") || name == "KEYLIME_CONFIG" {
			continue
		}
		if err := cfg.setEnv(strings.TrimPrefix(name, "KEYLIME_"), value); err != nil {
			if errors.Is(err, errNoSection) {
				continue // KEYLIME_<not a section>_…: another tool's variable (KEYLIME_VM_TEST, …)
			}
			return cfg, fmt.Errorf("environment %s: %w", name, err)
		}
	}
	for _, o := range overrides {
		key, value, ok := strings.Cut(o, "=")
		if !ok {
			return cfg, fmt.Errorf("override %q: want section.key=value", o)
		}
		if err := cfg.Set(key, value); err != nil {
			return cfg, fmt.Errorf("override %s: %w", key, err)
		}
	}
	return cfg, nil
}

// ErrUnknownKey is returned for a section or key that the configuration does not have.
var ErrUnknownKey = errors.New("unknown key")

// errNoSection marks an unknown section (a KEYLIME_ environment variable of another tool is ignored;
// an unknown key of a known section is an error).
var errNoSection = fmt.Errorf("%w: no such section", ErrUnknownKey)

// Set assigns value, parsed for the key's type, to "section.key".
func (c *Config) Set(key, value string) error {
	section, name, ok := strings.Cut(key, ".")
	if !ok {
		return fmt.Errorf("%w %q: want section.key", ErrUnknownKey, key)
	}
	f, err := c.field(section, func(tag string) bool { return tag == name })
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return setValue(f, value)
}

// setEnv handles SECTION_KEY (upper case, key words joined by underscores, as the TOML key).
func (c *Config) setEnv(name, value string) error {
	section, rest, ok := strings.Cut(name, "_")
	if !ok {
		return fmt.Errorf("%w: want KEYLIME_<SECTION>_<KEY>", errNoSection)
	}
	f, err := c.field(strings.ToLower(section), func(tag string) bool { return strings.EqualFold(tag, rest) })
	if err != nil {
		return err
	}
	return setValue(f, value)
}

func (c *Config) field(section string, match func(tag string) bool) (reflect.Value, error) {
	root := reflect.ValueOf(c).Elem()
	for i := 0; i < root.NumField(); i++ {
		if tagName(root.Type().Field(i)) != section {
			continue
		}
		sec := root.Field(i)
		for j := 0; j < sec.NumField(); j++ {
			if match(tagName(sec.Type().Field(j))) {
				return sec.Field(j), nil
			}
		}
		return reflect.Value{}, fmt.Errorf("%w in section [%s]", ErrUnknownKey, section)
	}
	return reflect.Value{}, fmt.Errorf("%w: [%s]", errNoSection, section)
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

var durationType = reflect.TypeOf(Duration(0))

func setValue(f reflect.Value, s string) error {
	if f.Type() == durationType {
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return err
		}
		f.Set(reflect.ValueOf(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", s)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		f.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		f.SetFloat(x)
	case reflect.Slice:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}

// Path resolves p against dir: absolute paths stay as they are.
func Path(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// Find returns the configuration file to read: the explicit path, else $KEYLIME_CONFIG, else DefaultPath
// when it exists, else "" (defaults only).
func Find(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if p := os.Getenv("KEYLIME_CONFIG"); p != "" {
		return p
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		return DefaultPath
	}
	return ""
}

// Duration is a time span written in TOML as a number of seconds (2, 0.5) or a Go duration string ("2s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses "2s", "500ms" or a plain number of seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if x, err := strconv.ParseFloat(s, 64); err == nil {
		if x < 0 {
			return fmt.Errorf("duration %q is negative", s)
		}
		*d = Duration(x * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (use seconds, or a value like 2s or 500ms)", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalTOML accepts TOML integers and floats (seconds) and strings.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		return d.UnmarshalText([]byte(strconv.FormatInt(x, 10)))
	case float64:
		return d.UnmarshalText([]byte(strconv.FormatFloat(x, 'f', -1, 64)))
	case string:
		return d.UnmarshalText([]byte(x))
	}
	return fmt.Errorf("duration must be a number of seconds or a string, not %T", v)
}

// MarshalText writes the duration in Go's notation.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
