package revocation

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func sample() *Message {
	ip, port := "127.0.0.1", 9002
	return &Message{
		Type: "revocation", IP: &ip, AgentID: "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", Port: &port,
		TPMPolicy: `{"15": ["00"], "mask": "0x8000"}`, MetaData: "{}", EventTime: EventTime(time.Date(2026, 8, 3, 8, 8, 39, 0, time.UTC)),
		EventID: "pcr_validation.invalid_pcr_15", SeverityLabel: "emergency", Context: `{"message": "PCR value is not in allowlist"}`,
	}
}

// TestEncodeMatchesPython: the text equals what Keylime's json.dumps produces (checked with python3 when
// available; the golden string otherwise).
func TestEncodeMatchesPython(t *testing.T) {
	m := sample()
	m.MetaData = `{"subject": "Ünïcode ✓ 😀", "tab": "a\tb", "q": "\"<&>"}`
	got := m.Encode()
	const golden = `{"type": "revocation", "ip": "127.0.0.1", "agent_id": "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", "port": 9002, "tpm_policy": "{\"15\": [\"00\"], \"mask\": \"0x8000\"}", "meta_data": "{\"subject\": \"\u00dcn\u00efcode \u2713 \ud83d\ude00\", \"tab\": \"a\\tb\", \"q\": \"\\\"<&>\"}", "event_time": "Mon Aug  3 08:08:39 2026", "event_id": "pcr_validation.invalid_pcr_15", "severity_label": "emergency", "context": "{\"message\": \"PCR value is not in allowlist\"}"}`
	if got != golden {
		t.Fatalf("encode:\n got %s\nwant %s", got, golden)
	}
	if py, err := exec.LookPath("python3"); err == nil {
		b, _ := json.Marshal(map[string]any{"type": m.Type, "ip": *m.IP, "agent_id": m.AgentID, "port": *m.Port, "tpm_policy": m.TPMPolicy,
			"meta_data": m.MetaData, "event_time": m.EventTime, "event_id": m.EventID, "severity_label": m.SeverityLabel, "context": m.Context})
		script := `import json,sys,collections
d=json.loads(sys.stdin.read(), object_pairs_hook=collections.OrderedDict)
keys=["type","ip","agent_id","port","tpm_policy","meta_data","event_time","event_id","severity_label","context"]
print(json.dumps(collections.OrderedDict((k,d[k]) for k in keys)))`
		cmd := exec.Command(py, "-c", script)
		cmd.Stdin = strings.NewReader(string(b))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(out)) != got {
			t.Errorf("python json.dumps:\n%s\nours:\n%s", out, got)
		}
	}
	// And it is valid JSON that decodes back.
	var back Message
	if err := json.Unmarshal([]byte(got), &back); err != nil || back.MetaData != m.MetaData {
		t.Fatalf("round trip: %v", err)
	}
}

func TestSignVerify(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	msg := sample().Encode()
	sig, err := Sign(key, msg)
	if err != nil {
		t.Fatal(err)
	}
	// Independent check: RSA-PSS SHA-256 with the maximum salt length (256 - 32 - 2 = 222 bytes).
	raw, _ := base64.StdEncoding.DecodeString(sig)
	h := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, h[:], raw, &rsa.PSSOptions{SaltLength: 222}); err != nil {
		t.Fatalf("not a max-salt PSS signature: %v", err)
	}
	m, err := Verify(&key.PublicKey, Envelope{Msg: msg, Signature: sig})
	if err != nil || m.AgentID != "d432fbb3-d2f1-4a97-9ef7-75bd81c00000" || m.EventID != "pcr_validation.invalid_pcr_15" {
		t.Fatalf("verify: %+v %v", m, err)
	}
	otherSig, _ := Sign(other, msg)
	for name, env := range map[string]Envelope{
		"unsigned":      {Msg: msg},
		"other key":     {Msg: msg, Signature: otherSig},
		"altered body":  {Msg: strings.Replace(msg, "invalid_pcr_15", "invalid_pcr_14", 1), Signature: sig},
		"not base64":    {Msg: msg, Signature: "%%%"},
		"truncated sig": {Msg: msg, Signature: sig[:40]},
	} {
		if _, err := Verify(&key.PublicKey, env); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
