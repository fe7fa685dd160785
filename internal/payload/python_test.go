package payload

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os/exec"
	"testing"
)

// keylimeCrypto mirrors keylime/crypto.py (encrypt, decrypt, do_hmac, rsa_encrypt, rsa_decrypt) with the
// same calls into Python's cryptography package, reading a JSON job on stdin.
const keylimeCrypto = `
import base64, hmac, json, os, sys
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

def encrypt(plaintext, key):
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(key), modes.GCM(iv), backend=default_backend()).encryptor()
    ct = e.update(plaintext) + e.finalize()
    return base64.b64encode(iv + ct + e.tag)

def decrypt(ciphertext, key):
    ciphertext = base64.b64decode(ciphertext)
    iv, tag = ciphertext[:16], ciphertext[-16:]
    d = Cipher(algorithms.AES(key), modes.GCM(iv, tag), backend=default_backend()).decryptor()
    return d.update(ciphertext[16:-16]) + d.finalize()

def do_hmac(key, value):
    h = hmac.new(key, value.encode(), "sha384")
    return h.hexdigest()

oaep = OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
job = json.load(sys.stdin)
k = base64.b64decode(job["k"])
priv = serialization.load_pem_private_key(job["nk"].encode(), password=None, backend=default_backend())
out = {
    "plain": base64.b64encode(decrypt(job["sealed"].encode(), k)).decode(),
    "tag": do_hmac(k, job["uuid"]),
    "u": base64.b64encode(priv.decrypt(base64.b64decode(job["wrapped"]), oaep)).decode(),
    "sealed": encrypt(b"sealed by keylime", k).decode(),
    "wrapped": base64.b64encode(priv.public_key().encrypt(b"V" * 32, oaep)).decode(),
}
print(json.dumps(out))
`

// TestAgainstKeylimeCrypto: what this package seals, tags and wraps, Keylime's own code (its
// crypto.py, run with Python's cryptography) opens, recomputes and unwraps, and the other way round.
// Skipped when python3 with the cryptography package is not installed.
func TestAgainstKeylimeCrypto(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import cryptography").Run()
	}
	if err != nil {
		t.Skip("python3 with the cryptography package is needed (TestGoldenVectors pins values computed with it)")
	}
	k, u, _, err := Split(nil)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(nk)
	sealed, _ := Encrypt(nil, k, []byte("sealed by keylime-go"))
	wrapped, _ := WrapKey(nil, &nk.PublicKey, u)
	const uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
	job, _ := json.Marshal(map[string]string{
		"k": base64.StdEncoding.EncodeToString(k), "nk": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"sealed": sealed, "wrapped": wrapped, "uuid": uuid,
	})
	cmd := exec.Command(py, "-c", keylimeCrypto)
	cmd.Stdin = bytes.NewReader(job)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var res struct{ Plain, Tag, U, Sealed, Wrapped string }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if p, _ := base64.StdEncoding.DecodeString(res.Plain); string(p) != "sealed by keylime-go" {
		t.Errorf("Keylime decrypted our payload to %q", p)
	}
	if res.Tag != Tag(k, uuid) {
		t.Errorf("auth_tag: Keylime %s, ours %s", res.Tag, Tag(k, uuid))
	}
	if got, _ := base64.StdEncoding.DecodeString(res.U); !bytes.Equal(got, u) {
		t.Error("Keylime unwrapped another U")
	}
	if p, err := Decrypt(k, res.Sealed); err != nil || string(p) != "sealed by keylime" {
		t.Errorf("Keylime's payload: %q %v", p, err)
	}
	if v, err := UnwrapKey(nk, res.Wrapped); err != nil || !bytes.Equal(v, bytes.Repeat([]byte("V"), 32)) {
		t.Errorf("Keylime's wrapped half: %v", err)
	}
}
