package verifier

// Layout of verifier.db (bbolt), owned by this package:
//
//	<root>
//	├── _store                 store's meta bucket (schema version)
//	├── agents
//	│   └── <agent id> : JSON record   one per agent added by a tenant
//	└── tls_sessions
//	    └── <agent id> : the TLS session to resume with the agent (transport.AgentTransport.Session);
//	                     it holds the session's secret, like the verifier's key beside this file
//
// The verifier keeps every agent's hot state in memory and writes records here when the state changes
// (at once) and after attestations (batched with other agents' writes).

import (
	"encoding/json"
	"fmt"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/store"
)

var (
	bucketAgents   = store.Bucket{"agents"}
	bucketSessions = store.Bucket{"tls_sessions"}
)

var migrations = []store.Migration{
	{Version: 1, Name: "create agents bucket", Apply: func(tx *store.Tx) error { return tx.CreateBucket(bucketAgents) }},
	{Version: 2, Name: "create named policy buckets", Apply: func(tx *store.Tx) error {
		for _, b := range []store.Bucket{kindRuntime.bucket(), kindMB.bucket(), bucketBlobs} {
			if err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}},
	{Version: 3, Name: "create TLS sessions bucket", Apply: func(tx *store.Tx) error { return tx.CreateBucket(bucketSessions) }},
}

// clockInfo is the TPM clock state of the last verified quote.
type clockInfo struct {
	Clock        uint64 `json:"clock"`
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
}

// record is one agent as stored in verifier.db.
type record struct {
	AgentID string `json:"agent_id"`
	IP      string `json:"ip"`
	Port    int    `json:"port"`
	// AKTPM is the TPM2B_PUBLIC of the AK; MTLSCert the agent's pinned certificate (PEM).
	AKTPM    []byte `json:"ak_tpm"`
	MTLSCert string `json:"mtls_cert"`

	TPMPolicy string `json:"tpm_policy"`
	// RuntimePolicyName and MBPolicyName name stored policies ("" for none); OwnsRuntimePolicy and
	// OwnsMBPolicy mark a policy that came with the add request and goes with the agent.
	RuntimePolicyName string `json:"runtime_policy_name,omitempty"`
	MBPolicyName      string `json:"mb_policy_name,omitempty"`
	OwnsRuntimePolicy bool   `json:"owns_runtime_policy,omitempty"`
	OwnsMBPolicy      bool   `json:"owns_mb_policy,omitempty"`
	Metadata          string `json:"metadata"`
	RevocationKey     string `json:"revocation_key,omitempty"`
	// V is the verifier's half of the payload key, sent to the agent after the first good attestation.
	V     []byte `json:"v,omitempty"`
	VSent bool   `json:"v_sent,omitempty"`

	AcceptHashAlgs       []string `json:"accept_tpm_hash_algs"`
	AcceptEncryptionAlgs []string `json:"accept_tpm_encryption_algs"`
	AcceptSigningAlgs    []string `json:"accept_tpm_signing_algs"`
	SupportedVersion     string   `json:"supported_version"`

	State            int       `json:"operational_state"`
	AttestationCount int       `json:"attestation_count"`
	LastReceived     int64     `json:"last_received_quote"`
	LastSuccess      int64     `json:"last_successful_attestation"`
	SeverityLevel    *int      `json:"severity_level,omitempty"`
	LastEventID      string    `json:"last_event_id,omitempty"`
	HashAlg          string    `json:"hash_alg,omitempty"`
	EncAlg           string    `json:"enc_alg,omitempty"`
	SignAlg          string    `json:"sign_alg,omitempty"`
	Clock            clockInfo `json:"clock"`
	HaveClock        bool      `json:"have_clock,omitempty"`
	// IMA is the incremental IMA attestation state: the next entry to ask for and PCR 10 after the
	// entries attested so far (zero: start from entry 0).
	IMA ima.State `json:"ima_state"`
	// NKPEM is the agent's NK as bound into PCR 16 by the last full quote.
	NKPEM    string            `json:"nk_pem,omitempty"`
	Failures []api.FailureInfo `json:"failures,omitempty"`
	// LastFailure is the human reading of the newest failure.
	LastFailure string `json:"last_failure,omitempty"`
}

func getRecord(g store.Getter, id string) (*record, error) {
	raw, err := g.Get(bucketAgents, []byte(id))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode agent %s: %w", id, err)
	}
	return &r, nil
}

func encodeRecord(r *record) ([]byte, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode agent %s: %w", r.AgentID, err)
	}
	return raw, nil
}
