package tenant

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tpm"
)

// quoteFixture is an identity-style quote captured from swtpm (copied from verifier/testdata): the
// registrar's AK, the nonce, the agent's NK PEM and the agent's answer.
type quoteFixture struct {
	AKTPM    string            `json:"ak_tpm"`
	Nonce    string            `json:"nonce"`
	PubKey   string            `json:"pubkey"`
	Response api.QuoteResponse `json:"response"`
}

func loadFixture(t testing.TB, name string) quoteFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f quoteFixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	f.Response.PubKey = f.PubKey
	return f
}

func mustAK(t testing.TB, b64 string) *tpm.Public {
	t.Helper()
	ak, err := tpm.ParsePublicBase64(b64)
	if err != nil {
		t.Fatal(err)
	}
	return ak
}

var defaultAccept = accepted{
	hash: []string{"sha512", "sha384", "sha256"},
	enc:  []string{"ecc", "rsa"},
	sign: []string{"ecdsa", "rsassa"},
}

func TestCheckIdentityQuote(t *testing.T) {
	rsa := loadFixture(t, "quote-rsa.json")
	ecc := loadFixture(t, "quote-ecc.json")
	flipSig := func(q string) string {
		parts := strings.Split(q[1:], ":")
		sig, _ := base64.StdEncoding.DecodeString(parts[1])
		sig[len(sig)-1] ^= 1
		parts[1] = base64.StdEncoding.EncodeToString(sig)
		return "r" + strings.Join(parts, ":")
	}
	for _, tc := range []struct {
		name   string
		fx     quoteFixture
		ak     string // default: the fixture's
		nonce  string // default: the fixture's
		accept *accepted
		mutate func(*api.QuoteResponse)
		want   string // "" = accepted
	}{
		{name: "rsa good", fx: rsa},
		{name: "ecc384 good with the default accept list", fx: ecc},
		{name: "wrong nonce", fx: rsa, nonce: "zzzzzzzzzz0123456789", want: "nonce mismatch"},
		{name: "other AK", fx: rsa, ak: ecc.AKTPM, want: "does not verify with the registrar's AK"},
		{name: "tampered signature", fx: rsa, mutate: func(q *api.QuoteResponse) { q.Quote = flipSig(q.Quote) }, want: "signature does not verify"},
		{name: "hash not accepted", fx: rsa, accept: &accepted{hash: []string{"sha384"}, enc: defaultAccept.enc, sign: defaultAccept.sign}, want: "hash algorithm \"sha256\" is not accepted"},
		{name: "unknown hash", fx: rsa, mutate: func(q *api.QuoteResponse) { q.HashAlg = "md5" }, accept: &accepted{hash: []string{"md5"}, enc: defaultAccept.enc, sign: defaultAccept.sign}, want: "not accepted"},
		{name: "enc not accepted", fx: ecc, accept: &accepted{hash: defaultAccept.hash, enc: []string{"rsa"}, sign: defaultAccept.sign}, want: "encryption algorithm \"ecc384\""},
		{name: "exact ecc256 does not take ecc384", fx: ecc, accept: &accepted{hash: defaultAccept.hash, enc: []string{"ecc256"}, sign: defaultAccept.sign}, want: "encryption algorithm"},
		{name: "sign not accepted", fx: rsa, accept: &accepted{hash: defaultAccept.hash, enc: defaultAccept.enc, sign: []string{"ecdsa"}}, want: "signing algorithm \"rsassa\""},
		{name: "no pubkey", fx: rsa, mutate: func(q *api.QuoteResponse) { q.PubKey = "" }, want: "no public key"},
		{name: "pubkey not PEM", fx: rsa, mutate: func(q *api.QuoteResponse) { q.PubKey = "hello" }, want: "not a PEM public key"},
		{name: "another agent's pubkey", fx: rsa, mutate: func(q *api.QuoteResponse) { q.PubKey = ecc.PubKey }, want: "PCR 16 does not bind"},
		{name: "malformed quote", fx: rsa, mutate: func(q *api.QuoteResponse) { q.Quote = "xyz" }, want: "invalid quote"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.fx.Response
			if tc.mutate != nil {
				tc.mutate(&q)
			}
			ak, nonce, acc := tc.fx.AKTPM, tc.fx.Nonce, defaultAccept
			if tc.ak != "" {
				ak = tc.ak
			}
			if tc.nonce != "" {
				nonce = tc.nonce
			}
			if tc.accept != nil {
				acc = *tc.accept
			}
			data, err := checkIdentityQuote(&q, mustAK(t, ak), nonce, acc)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && data.PCRs[policy.DataPCR] == nil:
				t.Fatal("accepted without PCR 16")
			case tc.want != "" && err == nil:
				t.Fatal("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestBuildTPMPolicy(t *testing.T) {
	z32 := strings.Repeat("00", 32)
	for _, tc := range []struct {
		name, in, mask, want string
	}{
		{name: "empty", in: "", mask: "0x0"},
		{name: "empty object", in: "{}", mask: "0x0"},
		{name: "one PCR as a string", in: `{"15": "` + strings.ToUpper(z32) + `"}`, mask: "0x8000"},
		{name: "two PCRs", in: `{"15": ["` + z32 + `"], "7": ["` + z32 + `", "` + strings.Repeat("11", 20) + `"]}`, mask: "0x8080"},
		{name: "mask given", in: `{"mask": "0x1"}`, want: "mask"},
		{name: "PCR 16", in: `{"16": ["` + z32 + `"]}`, want: "PCR 16"},
		{name: "PCR 10", in: `{"10": ["` + z32 + `"]}`, want: "PCR 10"},
		{name: "PCR 24", in: `{"24": ["` + z32 + `"]}`, want: "0-23"},
		{name: "not hex", in: `{"15": ["zz"]}`, want: "digest"},
		{name: "not JSON", in: `{15:`, want: "JSON"},
		{name: "array", in: `[]`, want: "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := BuildTPMPolicy(tc.in)
			if tc.want != "" {
				if err == nil || !errors.Is(err, policy.ErrBadTPMPolicy) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want ErrBadTPMPolicy mentioning %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := policy.FormatMask(p.Mask); got != tc.mask {
				t.Errorf("mask %s, want %s", got, tc.mask)
			}
			// The JSON sent to the verifier carries the mask and parses back to the same policy.
			var m map[string]any
			if err := json.Unmarshal([]byte(p.JSON()), &m); err != nil || m["mask"] != tc.mask {
				t.Errorf("JSON %s", p.JSON())
			}
			if back, err := policy.ParseTPMPolicy(p.JSON()); err != nil || back.Mask != p.Mask || len(back.PCRs) != len(p.PCRs) {
				t.Errorf("round trip: %v %v", back, err)
			}
		})
	}
}

func TestNonce(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		n, err := newNonce()
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != nonceLen || strings.Trim(n, alnum) != "" {
			t.Fatalf("nonce %q is not %d alphanumerics", n, nonceLen)
		}
		if seen[n] {
			t.Fatalf("nonce %q repeated", n)
		}
		seen[n] = true
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		base time.Duration
		exp  bool
		n    int
		want time.Duration
	}{
		{"exponential 2s, try 1", 2 * time.Second, true, 1, 2 * time.Second},
		{"exponential 2s, try 3", 2 * time.Second, true, 3, 8 * time.Second},
		{"exponential below 1s is flat", 500 * time.Millisecond, true, 3, 500 * time.Millisecond},
		{"flat", 2 * time.Second, false, 4, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := &Tenant{cfg: Config{RetryInterval: tc.base, ExponentialBackoff: tc.exp}}
			if got := tn.retryDelay(tc.n); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzCheckIdentityQuote feeds hostile agent answers to the identity quote check: it must never panic
// and never accept a quote other than the genuine one.
func FuzzCheckIdentityQuote(f *testing.F) {
	rsa := loadFixture(f, "quote-rsa.json")
	ak := mustAK(f, rsa.AKTPM)
	f.Add(rsa.Response.Quote, rsa.PubKey, rsa.Response.HashAlg)
	ecc := loadFixture(f, "quote-ecc.json")
	f.Add(ecc.Response.Quote, ecc.PubKey, ecc.Response.HashAlg)
	f.Add("r::", "", "sha1")
	genuine, _ := tpm.ParseQuote(rsa.Response.Quote)
	want, err := checkIdentityQuote(&rsa.Response, ak, rsa.Nonce, defaultAccept)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, quote, pubkey, hashAlg string) {
		q := rsa.Response
		q.Quote, q.PubKey, q.HashAlg = quote, pubkey, hashAlg
		got, err := checkIdentityQuote(&q, ak, rsa.Nonce, defaultAccept)
		if err != nil {
			return
		}
		// Whatever passes must be the genuine quote: the same signed bytes, signature, PCR values and key
		// (the PCR blob's unused slots carry no meaning and may differ).
		pq, _ := tpm.ParseQuote(quote)
		if !bytes.Equal(pq.Attest, genuine.Attest) || !bytes.Equal(pq.Signature, genuine.Signature) ||
			pubkey != rsa.PubKey || hashAlg != rsa.Response.HashAlg || !samePCRs(got.PCRs, want.PCRs) {
			t.Fatalf("accepted a forged identity quote: %q %q %q", quote, pubkey, hashAlg)
		}
	})
}

func samePCRs(a, b map[int][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// FuzzBuildTPMPolicy: any text either fails with ErrBadTPMPolicy or gives a policy whose JSON the
// verifier parses back to the same mask.
func FuzzBuildTPMPolicy(f *testing.F) {
	f.Add(`{"15": ["` + strings.Repeat("00", 32) + `"]}`)
	f.Add(`{"7": "` + strings.Repeat("ab", 20) + `", "0": []}`)
	f.Add(`{"mask": "0x1"}`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := BuildTPMPolicy(s)
		if err != nil {
			if !errors.Is(err, policy.ErrBadTPMPolicy) {
				t.Fatalf("error not wrapping ErrBadTPMPolicy: %v", err)
			}
			return
		}
		back, err := policy.ParseTPMPolicy(p.JSON())
		if err != nil || back.Mask != p.Mask {
			t.Fatalf("policy %q → %s does not round-trip: %v", s, p.JSON(), err)
		}
	})
}
