package softagent_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/ca"
	"github.com/keylime-go/keylime/internal/client"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/internal/transport"
	"github.com/keylime-go/keylime/tpm"
)

// Errors of the checks a verifier makes beyond tpm.VerifyQuote.
var (
	errDataPCR = errors.New("PCR 16 does not bind the agent's NK")
	errClock   = errors.New("TPM clock did not advance")
	errIMA     = errors.New("IMA log does not replay to PCR 10")
)

var (
	nkOnce sync.Once
	nkKey  *rsa.PrivateKey
)

// sharedNK is one NK for all agents of the test binary (RSA key generation is slow).
func sharedNK(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	nkOnce.Do(func() {
		var err error
		if nkKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return nkKey
}

// newPKI creates a Keylime CA with a client certificate (what the verifier and tenant present).
func newPKI(t testing.TB) *transport.Material {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.Init(dir, ca.DefaultSubject)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Issue("client", ca.Client, nil); err != nil {
		t.Fatal(err)
	}
	m, err := transport.LoadMaterial(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startAgent starts a software agent on 127.0.0.1:0 trusting m's CA; it is closed when the test ends.
func startAgent(t testing.TB, m *transport.Material, cfg softagent.Config) *softagent.Agent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientCAs = m.Pool
	if cfg.NK == nil {
		cfg.NK = sharedNK(t)
	}
	a, err := softagent.New(ln, cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("softagent.New: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

// dial returns a Keylime agent client for a that pins its certificate and presents m's client
// certificate, as the verifier does.
func dial(t testing.TB, a *softagent.Agent, m *transport.Material, version string) *client.Agent {
	t.Helper()
	conf := transport.PinnedClientConfig(&m.Cert, a.Cert())
	hc := transport.NewHTTPClient(conf, 10*time.Second)
	t.Cleanup(hc.CloseIdleConnections)
	return client.NewAgent(hc, a.URL(), version)
}

// check verifies a quote response as the verifier does: the quote against the agent's AK (as registered)
// and the nonce, PCR 16 against the NK the verifier knows, and the clock against the previous quote
// (prev may be nil).
func check(t testing.TB, a *softagent.Agent, res *api.QuoteResponse, nonce string, prev *tpm.QuoteData) (*tpm.QuoteData, error) {
	t.Helper()
	ak, err := tpm.ParsePublic(a.AKPublic())
	if err != nil {
		t.Fatalf("ParsePublic(AK): %v", err)
	}
	q, err := tpm.ParseQuote(res.Quote)
	if err != nil {
		return nil, err
	}
	data, err := tpm.VerifyQuote(q, ak, []byte(nonce), res.HashAlg)
	if err != nil {
		return nil, err
	}
	want, err := tpm.DataPCRValue(res.HashAlg, a.NKPEM())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(data.PCRs[softagent.DataPCR], want) {
		return data, errDataPCR
	}
	if res.PubKey != "" && res.PubKey != string(a.NKPEM()) {
		if w, _ := tpm.DataPCRValue(res.HashAlg, []byte(res.PubKey)); !bytes.Equal(data.PCRs[softagent.DataPCR], w) {
			return data, fmt.Errorf("%w: the pubkey sent is not the one bound", errDataPCR)
		}
	}
	if prev != nil {
		if err := clockAdvanced(prev, data); err != nil {
			return data, err
		}
	}
	return data, nil
}

// clockAdvanced is Keylime's clock rule: resetCount and restartCount never decrease, safe is set, and
// while both counts stay the same the clock strictly increases.
func clockAdvanced(prev, cur *tpm.QuoteData) error {
	switch {
	case !cur.Safe:
		return fmt.Errorf("%w: clock not safe", errClock)
	case cur.ResetCount < prev.ResetCount:
		return fmt.Errorf("%w: resetCount %d after %d", errClock, cur.ResetCount, prev.ResetCount)
	case cur.ResetCount == prev.ResetCount && cur.RestartCount < prev.RestartCount:
		return fmt.Errorf("%w: restartCount %d after %d", errClock, cur.RestartCount, prev.RestartCount)
	case cur.ResetCount == prev.ResetCount && cur.RestartCount == prev.RestartCount && cur.Clock <= prev.Clock:
		return fmt.Errorf("%w: clock %d after %d", errClock, cur.Clock, prev.Clock)
	}
	return nil
}

// replayIMA extends pcr (the running PCR 10 value of bank hashAlg) with every ima-ng line of text, as
// Keylime replays the ASCII log: H_bank of the template data rebuilt from the line, after checking the
// logged SHA-1 template hash. It returns the new value and the number of lines.
func replayIMA(t testing.TB, hashAlg string, pcr []byte, text string) ([]byte, int) {
	t.Helper()
	var newHash func() hash.Hash
	switch hashAlg {
	case "sha1":
		newHash = sha1.New
	case "sha256":
		newHash = sha256.New
	default:
		t.Fatalf("replay: bank %s", hashAlg)
	}
	pcr = bytes.Clone(pcr)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Split(sc.Text(), " ")
		if len(f) != 5 || f[0] != "10" || f[2] != "ima-ng" {
			t.Fatalf("replay: unexpected line %q", sc.Text())
		}
		algo, hexDigest, ok := strings.Cut(f[3], ":")
		digest, err := hex.DecodeString(hexDigest)
		if !ok || err != nil {
			t.Fatalf("replay: bad digest in %q", sc.Text())
		}
		var data []byte
		data = appendU32LE(data, len(algo)+2+len(digest))
		data = append(append(append(data, algo...), ':', 0), digest...)
		data = appendU32LE(data, len(f[4])+1)
		data = append(append(data, f[4]...), 0)
		th := sha1.Sum(data)
		if hex.EncodeToString(th[:]) != f[1] {
			t.Fatalf("replay: template hash of %q is %x", sc.Text(), th)
		}
		h := newHash()
		h.Write(data)
		ext := newHash()
		ext.Write(pcr)
		ext.Write(h.Sum(nil))
		pcr = ext.Sum(nil)
		n++
	}
	return pcr, n
}

func appendU32LE(b []byte, v int) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
