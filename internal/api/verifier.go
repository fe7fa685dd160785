package api

import "encoding/json"

// AddAgentRequest is the body of the verifier's POST /v2.x/agents/{id}, field for field as Keylime's
// tenant sends it. tpm_policy and metadata are JSON texts inside strings; runtime_policy is base64.
type AddAgentRequest struct {
	V                       *string  `json:"v"`
	CloudAgentIP            string   `json:"cloudagent_ip"`
	CloudAgentPort          Port     `json:"cloudagent_port"`
	VerifierIP              *string  `json:"verifier_ip,omitempty"`
	VerifierPort            *Port    `json:"verifier_port,omitempty"`
	TPMPolicy               string   `json:"tpm_policy"`
	RuntimePolicy           string   `json:"runtime_policy"`
	RuntimePolicyName       *string  `json:"runtime_policy_name,omitempty"`
	RuntimePolicyKey        *string  `json:"runtime_policy_key,omitempty"`
	MBPolicy                *string  `json:"mb_policy"`
	MBPolicyName            *string  `json:"mb_policy_name"`
	IMASignVerificationKeys string   `json:"ima_sign_verification_keys"`
	Metadata                string   `json:"metadata"`
	RevocationKey           string   `json:"revocation_key"`
	AcceptTPMHashAlgs       []string `json:"accept_tpm_hash_algs"`
	AcceptTPMEncryptionAlgs []string `json:"accept_tpm_encryption_algs"`
	AcceptTPMSigningAlgs    []string `json:"accept_tpm_signing_algs"`
	AKTPM                   string   `json:"ak_tpm"`
	MTLSCert                *string  `json:"mtls_cert"`
	SupportedVersion        string   `json:"supported_version"`
}

// VerifierAgent is the verifier's GET /v2.x/agents/{id} results (and one value of a bulk listing).
type VerifierAgent struct {
	OperationalState           int      `json:"operational_state"`
	V                          *string  `json:"v"`
	IP                         string   `json:"ip"`
	Port                       int      `json:"port"`
	TPMPolicy                  string   `json:"tpm_policy"`
	MetaData                   string   `json:"meta_data"`
	HasMBRefstate              int      `json:"has_mb_refstate"`
	HasRuntimePolicy           int      `json:"has_runtime_policy"`
	AcceptTPMHashAlgs          []string `json:"accept_tpm_hash_algs"`
	AcceptTPMEncryptionAlgs    []string `json:"accept_tpm_encryption_algs"`
	AcceptTPMSigningAlgs       []string `json:"accept_tpm_signing_algs"`
	HashAlg                    string   `json:"hash_alg"`
	EncAlg                     string   `json:"enc_alg"`
	SignAlg                    string   `json:"sign_alg"`
	VerifierID                 string   `json:"verifier_id"`
	VerifierIP                 string   `json:"verifier_ip"`
	VerifierPort               int      `json:"verifier_port"`
	SeverityLevel              *int     `json:"severity_level"`
	LastEventID                *string  `json:"last_event_id"`
	AttestationCount           int      `json:"attestation_count"`
	LastReceivedQuote          int64    `json:"last_received_quote"`
	LastSuccessfulAttestation  int64    `json:"last_successful_attestation"`
	AttestationStatus          string   `json:"attestation_status"`
	AttestationPeriod          string   `json:"attestation_period"`
	MaximumAttestationInterval string   `json:"maximum_attestation_interval"`
	// Failures are our addition: why the agent failed, newest last (event id and context).
	Failures []FailureInfo `json:"failures,omitempty"`
	// LastFailure is a one-line human reading of the last failure.
	LastFailure string `json:"last_failure,omitempty"`
}

// FailureInfo is one attestation failure as the verifier reports it.
type FailureInfo struct {
	EventID string          `json:"event_id"`
	Context json.RawMessage `json:"context,omitempty"`
	Time    int64           `json:"time,omitempty"`
}

// VerifierList is GET /v2.x/agents/: Keylime returns each id as a one-element list.
type VerifierList struct {
	UUIDs [][]string `json:"uuids"`
}

// Operational states of an agent on the verifier (Keylime's common/states.py).
const (
	StateRegistered    = 0
	StateStart         = 1
	StateSaved         = 2
	StateGetQuote      = 3
	StateGetQuoteRetry = 4
	StateProvideV      = 5
	StateProvideVRetry = 6
	StateFailed        = 7
	StateTerminated    = 8
	StateInvalidQuote  = 9
	StateTenantFailed  = 10
)

// StateNames are the display names of the operational states, indexed by state.
var StateNames = []string{
	"Registered", "Start", "Saved", "Get Quote", "Get Quote (retry)", "Provide V", "Provide V (retry)",
	"Failed", "Terminated", "Invalid Quote", "Tenant Quote Failed",
}

// StateName returns the display name of a state, or "Unknown (n)".
func StateName(s int) string {
	if s >= 0 && s < len(StateNames) {
		return StateNames[s]
	}
	return "Unknown"
}

// AttestationStatus maps a pull-mode state to Keylime's attestation_status: PASS, FAIL or PENDING.
func AttestationStatus(state int) string {
	switch state {
	case StateGetQuote, StateGetQuoteRetry, StateProvideV, StateProvideVRetry:
		return "PASS"
	case StateFailed, StateInvalidQuote, StateTenantFailed:
		return "FAIL"
	}
	return "PENDING"
}

// RuntimePolicyRequest is the body of POST/PUT /v2.x/allowlists/{name}: the runtime policy JSON, base64.
type RuntimePolicyRequest struct {
	TPMPolicy        *string `json:"tpm_policy,omitempty"`
	RuntimePolicy    string  `json:"runtime_policy"`
	RuntimePolicyKey *string `json:"runtime_policy_key,omitempty"`
}

// RuntimePolicy is GET /v2.x/allowlists/{name}; "tmp_policy" is upstream's spelling (always null).
type RuntimePolicy struct {
	Name          string  `json:"name"`
	TmpPolicy     *string `json:"tmp_policy"`
	RuntimePolicy string  `json:"runtime_policy"`
}

// RuntimePolicyList is GET /v2.x/allowlists/ (the key has a space, as upstream).
type RuntimePolicyList struct {
	Names []string `json:"runtimepolicy names"`
}

// MBPolicyRequest is the body of POST/PUT /v2.x/mbpolicies/{name}: the reference state as JSON text.
type MBPolicyRequest struct {
	MBPolicy string `json:"mb_policy"`
}

// MBPolicy is GET /v2.x/mbpolicies/{name}.
type MBPolicy struct {
	Name     string `json:"name"`
	MBPolicy string `json:"mb_policy"`
}

// MBPolicyList is GET /v2.x/mbpolicies/.
type MBPolicyList struct {
	Names []string `json:"mbpolicy names"`
}
