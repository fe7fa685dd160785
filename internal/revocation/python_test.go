package revocation

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os/exec"
	"testing"
)

// keylimeRSA mirrors keylime/crypto.py's rsa_sign and rsa_verify (RSA-PSS, MGF1-SHA256, maximum salt,
// SHA-256) with Python's cryptography package: it verifies our signature and signs a message of its own.
const keylimeRSA = `
import base64, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
job = json.load(sys.stdin)
priv = serialization.load_pem_private_key(job["key"].encode(), password=None, backend=default_backend())
def verify(msg, sig):
    try:
        priv.public_key().verify(base64.b64decode(sig), msg.encode(), pss, hashes.SHA256())
        return True
    except InvalidSignature:
        return False
print(json.dumps({
    "ours": verify(job["msg"], job["sig"]),
    "altered": verify(job["msg"] + " ", job["sig"]),
    "sig": base64.b64encode(priv.sign(job["msg"].encode(), pss, hashes.SHA256())).decode(),
}))
`

// TestAgainstKeylimeRSA: Keylime's own verification (its crypto.py with Python's cryptography) accepts
// our revocation signatures and refuses them on an altered message, and we accept its signatures.
// Skipped when python3 with the cryptography package is not installed.
func TestAgainstKeylimeRSA(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import cryptography").Run()
	}
	if err != nil {
		t.Skip("python3 with the cryptography package is needed")
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	msg := sample().Encode()
	sig, err := Sign(key, msg)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := json.Marshal(map[string]string{"key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "msg": msg, "sig": sig})
	cmd := exec.Command(py, "-c", keylimeRSA)
	cmd.Stdin = bytes.NewReader(job)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var res struct {
		Ours, Altered bool
		Sig           string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Ours || res.Altered {
		t.Errorf("Keylime's rsa_verify: our signature %v, on an altered message %v", res.Ours, res.Altered)
	}
	if m, err := Verify(&key.PublicKey, Envelope{Msg: msg, Signature: res.Sig}); err != nil || m.AgentID != sample().AgentID {
		t.Errorf("Keylime's signature refused: %v", err)
	}
}
