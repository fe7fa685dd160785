package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// RegisterRequest is the body of POST /v2.x/agents/{id} (and POST /v2.x/agents with agent_id) that an agent
// sends to the registrar. Binary TPM structures are standard base64; ekcert may be PEM, base64 DER or null.
type RegisterRequest struct {
	AgentID    string  `json:"agent_id,omitempty"`
	EKTPM      string  `json:"ek_tpm"`
	EKCert     *string `json:"ekcert"`
	AIKTPM     string  `json:"aik_tpm"`
	MTLSCert   *string `json:"mtls_cert,omitempty"`
	IP         *string `json:"ip,omitempty"`
	Port       *Port   `json:"port,omitempty"`
	IAKTPM     *string `json:"iak_tpm,omitempty"`
	IDevIDTPM  *string `json:"idevid_tpm,omitempty"`
	IAKCert    *string `json:"iak_cert,omitempty"`
	IDevIDCert *string `json:"idevid_cert,omitempty"`
	IAKAttest  *string `json:"iak_attest,omitempty"`
	IAKSign    *string `json:"iak_sign,omitempty"`
}

// RegisterResponse is the registrar's answer to a registration: the MakeCredential blob in the tpm2-tools
// file format, base64.
type RegisterResponse struct {
	Blob string `json:"blob"`
}

// ActivateRequest is the body of PUT /v2.x/agents/{id} (or …/activate): lowercase hex HMAC-SHA384.
type ActivateRequest struct {
	AuthTag string `json:"auth_tag"`
}

// RegistrarAgent is the registrar's GET /v2.x/agents/{id} results.
type RegistrarAgent struct {
	AgentID  string  `json:"agent_id"`
	EKTPM    string  `json:"ek_tpm"`
	EKCert   *string `json:"ekcert"`
	AIKTPM   string  `json:"aik_tpm"`
	MTLSCert *string `json:"mtls_cert"`
	IP       *string `json:"ip"`
	Port     *int    `json:"port"`
	RegCount int     `json:"regcount"`
	Active   bool    `json:"active"`
}

// RegistrarList is the registrar's GET /v2.x/agents/ results: a flat list of agent ids.
type RegistrarList struct {
	UUIDs []string `json:"uuids"`
}

// Port is a TCP port that decodes from a JSON number or a numeric string, as Keylime's registrar accepts
// both, and encodes as a number.
type Port int

// UnmarshalJSON accepts 9002 and "9002"; anything else, or a value outside 0–65535, is an error.
func (p *Port) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	var n int64
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("port: %w", err)
		}
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return fmt.Errorf("port %q is not a number", s)
		}
		n = v
	} else {
		var v json.Number
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("port must be a number or a numeric string")
		}
		i, err := v.Int64()
		if err != nil {
			return fmt.Errorf("port %s is not an integer", v)
		}
		n = i
	}
	if n < 0 || n > 65535 {
		return fmt.Errorf("port %d out of range", n)
	}
	*p = Port(n)
	return nil
}
