package api

// QuoteResponse is the agent's answer to quotes/identity and quotes/integrity. Optional fields are
// omitted, not null, as the Rust agent does.
type QuoteResponse struct {
	// Quote is "r" + b64(TPMS_ATTEST) + ":" + b64(TPMT_SIGNATURE) + ":" + b64(tpm2-tools PCR blob).
	Quote   string `json:"quote"`
	HashAlg string `json:"hash_alg"`
	EncAlg  string `json:"enc_alg"`
	SignAlg string `json:"sign_alg"`
	// PubKey is the PEM of the agent's NK (identity quotes, and integrity quotes with partial=0).
	PubKey string `json:"pubkey,omitempty"`
	// IMAMeasurementList is the ASCII IMA log from entry IMAMeasurementListEntry on.
	IMAMeasurementList      *string `json:"ima_measurement_list,omitempty"`
	IMAMeasurementListEntry *int    `json:"ima_measurement_list_entry,omitempty"`
	// MBMeasurementList is the base64 binary UEFI event log (when PCR 0 is in the mask).
	MBMeasurementList *string `json:"mb_measurement_list,omitempty"`
	// BootTime is documented by Keylime but no longer sent by its agent; we omit it too.
	BootTime *int64 `json:"boottime,omitempty"`
}

// AgentInfo is GET /v2.2+/agent/info.
type AgentInfo struct {
	AgentUUID  string `json:"agent_uuid"`
	TPMHashAlg string `json:"tpm_hash_alg"`
	TPMEncAlg  string `json:"tpm_enc_alg"`
	TPMSignAlg string `json:"tpm_sign_alg"`
	AKHandle   uint32 `json:"ak_handle"`
}

// PubKey is GET keys/pubkey: the agent's NK in PEM.
type PubKey struct {
	PubKey string `json:"pubkey"`
}

// UKeyRequest is POST keys/ukey from the tenant: U wrapped for the NK, HMAC-SHA384(K, agent id) and the
// optional encrypted payload.
type UKeyRequest struct {
	AuthTag      string `json:"auth_tag"`
	EncryptedKey string `json:"encrypted_key"`
	Payload      string `json:"payload,omitempty"`
}

// VKeyRequest is POST keys/vkey from the verifier: V wrapped for the NK.
type VKeyRequest struct {
	EncryptedKey string `json:"encrypted_key"`
}

// VerifyResponse is GET keys/verify: hex HMAC-SHA384(K, challenge).
type VerifyResponse struct {
	HMAC string `json:"hmac"`
}

// RevocationRequest is POST notifications/revocation: the message text and its signature.
type RevocationRequest struct {
	Msg       string `json:"msg"`
	Signature string `json:"signature"`
}
