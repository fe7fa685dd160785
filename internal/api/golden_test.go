package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func ptr[T any](v T) *T { return &v }

// TestGoldenWire pins the JSON of every message we send, byte for byte: a change to a field name or
// shape fails here before it breaks an upstream peer.
func TestGoldenWire(t *testing.T) {
	port := Port(9002)
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"registrar_register_request", RegisterRequest{
			EKTPM: "AToAAQALAAMAsgAg", EKCert: ptr("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
			AIKTPM: "ARgAAQALAAUAcgAA", MTLSCert: ptr("disabled"), IP: ptr("127.0.0.1"), Port: &port,
		}},
		{"registrar_register_response", Success(RegisterResponse{Blob: "utzA3gAAAAEARAAg"})},
		{"registrar_activate_request", ActivateRequest{AuthTag: "99371ba1"}},
		{"registrar_agent", Success(RegistrarAgent{
			AgentID: "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", EKTPM: "AToAAQ==", EKCert: ptr("MIIB"), AIKTPM: "ARgAAQ==",
			MTLSCert: ptr("-----BEGIN CERTIFICATE-----\n"), IP: ptr("127.0.0.1"), Port: ptr(9002), RegCount: 1, Active: true,
		})},
		{"registrar_list", Success(RegistrarList{UUIDs: []string{"a", "b"}})},
		{"registrar_version", Success(ServerVersion{CurrentVersion: CurrentVersion, SupportedVersions: SupportedVersions})},
		{"error_envelope", Failure(400, "API version not supported: v9.9 (supported: 2.1, 2.2, 2.3, 2.4, 2.5, 2.6)")},
		{"agent_version", Success(AgentVersion{SupportedVersion: CurrentVersion, SupportedVersions: SupportedVersions})},
		{"agent_quote_integrity", Success(QuoteResponse{
			Quote: "r/1RDRw==:ABQACw==:AQAAAA==", HashAlg: "sha256", EncAlg: "rsa2048", SignAlg: "rsassa",
			PubKey: "-----BEGIN PUBLIC KEY-----\n", IMAMeasurementList: ptr("10 abc ima-ng sha256:00 /bin/sh\n"),
			IMAMeasurementListEntry: ptr(0),
		})},
		{"agent_quote_partial", Success(QuoteResponse{Quote: "r/1RDRw==:ABQACw==:AQAAAA==", HashAlg: "sha256", EncAlg: "rsa", SignAlg: "rsassa"})},
		{"agent_info", Success(AgentInfo{AgentUUID: "u", TPMHashAlg: "sha256", TPMEncAlg: "rsa2048", TPMSignAlg: "rsassa", AKHandle: 0x80000001})},
		{"verifier_add_request", AddAgentRequest{
			CloudAgentIP: "127.0.0.1", CloudAgentPort: 9002, TPMPolicy: `{"15":["00"],"mask":"0x8000"}`,
			MBPolicyName: ptr(""), Metadata: "{}", AcceptTPMHashAlgs: []string{"sha256"},
			AcceptTPMEncryptionAlgs: []string{"rsa"}, AcceptTPMSigningAlgs: []string{"rsassa"},
			AKTPM: "ARgAAQ==", MTLSCert: ptr("-----BEGIN CERTIFICATE-----\n"), SupportedVersion: "2.6",
		}},
		{"verifier_agent_status", Success(VerifierAgent{
			OperationalState: StateInvalidQuote, IP: "127.0.0.1", Port: 9002, TPMPolicy: `{"mask":"0x8000"}`,
			MetaData: "{}", AcceptTPMHashAlgs: []string{"sha256"}, AcceptTPMEncryptionAlgs: []string{"rsa"},
			AcceptTPMSigningAlgs: []string{"rsassa"}, HashAlg: "sha256", EncAlg: "rsa2048", SignAlg: "rsassa",
			VerifierID: "default", VerifierIP: "127.0.0.1", VerifierPort: 8881, SeverityLevel: ptr(6),
			LastEventID: ptr("pcr_validation.invalid_pcr_15"), AttestationCount: 3, LastReceivedQuote: 1700000003,
			LastSuccessfulAttestation: 1700000002, AttestationStatus: "FAIL", AttestationPeriod: "2s",
			MaximumAttestationInterval: "10s",
			Failures:                   []FailureInfo{{EventID: "pcr_validation.invalid_pcr_15", Context: json.RawMessage(`{"pcr":15}`), Time: 1700000003}},
			LastFailure:                "pcr_validation.invalid_pcr_15: PCR value is not in allowlist, pcr=15",
		})},
		{"verifier_list", Success(VerifierList{UUIDs: [][]string{{"a"}, {"b"}}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.MarshalIndent(tc.v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update once to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("wire format changed for %s:\n got %s\nwant %s", tc.name, got, want)
			}
		})
	}
}

// TestDecodeUpstreamBodies decodes bodies shaped as upstream Keylime components send them.
func TestDecodeUpstreamBodies(t *testing.T) {
	// rust-keylime agent registration: port as a number, ekcert PEM, iak/idevid fields present as null.
	var reg RegisterRequest
	rust := `{"ekcert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","ek_tpm":"AToAAQ==","aik_tpm":"ARgAAQ==",
		"iak_tpm":null,"idevid_tpm":null,"iak_cert":null,"idevid_cert":null,"mtls_cert":"-----BEGIN CERTIFICATE-----\n",
		"ip":"127.0.0.1","port":9002}`
	if err := json.Unmarshal([]byte(rust), &reg); err != nil || reg.Port == nil || *reg.Port != 9002 || reg.EKCert == nil {
		t.Fatalf("rust registration: %+v %v", reg, err)
	}
	// Python agents sent the port as a string.
	if err := json.Unmarshal([]byte(`{"aik_tpm":"x","port":"9002"}`), &reg); err != nil || *reg.Port != 9002 {
		t.Fatalf("string port: %v", err)
	}
	// A Rust agent's empty success has results null.
	var r Response
	if err := json.Unmarshal([]byte(`{"code":200,"status":"Success","results":null}`), &r); err != nil {
		t.Fatal(err)
	}
	var v AgentVersion
	if err := r.Decode(&v); err != nil {
		t.Fatalf("null results: %v", err)
	}
	// Keylime's tenant add body (python): every key present, tpm_policy and metadata as JSON strings.
	py := `{"v":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","cloudagent_ip":"10.0.0.5","cloudagent_port":"9002",
		"tpm_policy":"{\"15\": [\"00\"], \"mask\": \"0x8000\"}","runtime_policy":"","runtime_policy_name":null,
		"runtime_policy_key":null,"mb_policy":null,"mb_policy_name":"","ima_sign_verification_keys":"",
		"metadata":"{}","revocation_key":"","accept_tpm_hash_algs":["sha512","sha384","sha256"],
		"accept_tpm_encryption_algs":["ecc","rsa"],"accept_tpm_signing_algs":["ecschnorr","rsassa"],
		"ak_tpm":"ARgAAQ==","mtls_cert":"-----BEGIN CERTIFICATE-----\n","supported_version":"2.1"}`
	var add AddAgentRequest
	if err := json.Unmarshal([]byte(py), &add); err != nil || add.CloudAgentPort != 9002 || add.SupportedVersion != "2.1" || add.MBPolicyName == nil {
		t.Fatalf("python add body: %+v %v", add, err)
	}
}
