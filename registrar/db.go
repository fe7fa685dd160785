package registrar

// Layout of registrar.db (bbolt), owned by this package:
//
//	<root>
//	├── _store                 store's meta bucket (schema version)
//	└── agents
//	    └── <agent id> : JSON record   one per registered agent (active or waiting for activation)
//
// Records are private to this file and mapped explicitly to the API types, so a change of the wire format
// never silently changes what is on disk.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/store"
)

var bucketAgents = store.Bucket{"agents"}

// migrations is the registrar's schema history; append, never edit.
var migrations = []store.Migration{
	{Version: 1, Name: "create agents bucket", Apply: func(tx *store.Tx) error { return tx.CreateBucket(bucketAgents) }},
}

// record is one agent as stored in registrar.db.
type record struct {
	AgentID  string `json:"agent_id"`
	EKTPM    []byte `json:"ek_tpm"`              // TPM2B_PUBLIC of the EK
	EKCert   []byte `json:"ekcert,omitempty"`    // DER, nil when the agent sent none
	AIKTPM   []byte `json:"aik_tpm"`             // TPM2B_PUBLIC of the AK
	MTLSCert string `json:"mtls_cert,omitempty"` // PEM, "disabled", or "" when not sent
	IP       string `json:"ip,omitempty"`
	Port     int    `json:"port,omitempty"`
	RegCount int    `json:"regcount"`
	Active   bool   `json:"active"`
	// Key is the base64 text of the credential challenge, the HMAC key of the auth_tag.
	Key          string    `json:"key,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	ActivatedAt  time.Time `json:"activated_at,omitzero"`
}

func (r *record) toAPI() api.RegistrarAgent {
	a := api.RegistrarAgent{
		AgentID:  r.AgentID,
		EKTPM:    base64.StdEncoding.EncodeToString(r.EKTPM),
		AIKTPM:   base64.StdEncoding.EncodeToString(r.AIKTPM),
		RegCount: r.RegCount,
		Active:   r.Active,
	}
	if r.EKCert != nil {
		s := base64.StdEncoding.EncodeToString(r.EKCert)
		a.EKCert = &s
	}
	if r.MTLSCert != "" {
		s := r.MTLSCert
		a.MTLSCert = &s
	}
	if r.IP != "" {
		s := r.IP
		a.IP = &s
	}
	if r.Port != 0 {
		p := r.Port
		a.Port = &p
	}
	return a
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

func putRecord(tx *store.Tx, r *record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode agent %s: %w", r.AgentID, err)
	}
	return tx.Put(bucketAgents, []byte(r.AgentID), raw)
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
