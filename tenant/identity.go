package tenant

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/tpm"
)

// nonceLen is the length of the identity-quote nonce, as Keylime's tenant uses (random_password(20)).
const nonceLen = 20

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newNonce returns nonceLen random alphanumeric characters.
func newNonce() (string, error) {
	out := make([]byte, 0, nonceLen)
	buf := make([]byte, 32)
	for len(out) < nonceLen {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// 248 = 4*62: rejecting the rest keeps every character equally likely.
			if b < 248 && len(out) < nonceLen {
				out = append(out, alnum[int(b)%len(alnum)])
			}
		}
	}
	return string(out), nil
}

// accepted holds the algorithm lists an identity quote is judged against.
type accepted struct {
	hash, enc, sign []string
}

// normaliseEncAlg maps the pre-2.5 spellings to the sized ones, as Keylime does ("rsa" is "rsa2048").
func normaliseEncAlg(s string) string {
	switch s {
	case "rsa":
		return "rsa2048"
	case "ecc":
		return "ecc256"
	}
	return s
}

// isAccepted is Keylime's algorithms.is_accepted (an exact match, or equal after normalisation), plus the
// rule our verifier applies: a bare family name ("rsa", "ecc") accepts every size of it, so the default
// accept list takes an ECC P-384 EK ("ecc384") as the verifier does.
func isAccepted(alg string, list []string) bool {
	if slices.Contains(list, alg) {
		return true
	}
	n := normaliseEncAlg(alg)
	return slices.ContainsFunc(list, func(a string) bool {
		return normaliseEncAlg(a) == n || ((a == "rsa" || a == "ecc") && strings.HasPrefix(alg, a))
	})
}

// checkIdentityQuote judges an agent's answer to quotes/identity, in this order, and returns the quote's
// data only when every check passes:
//   - hash_alg, enc_alg and sign_alg are in the accepted lists (and hash_alg is a known hash);
//   - the quote parses and verifies with the registrar's AK over nonce (signature, TPM-generated quote,
//     nonce, PCR digest; see tpm.VerifyQuote);
//   - the agent sent its public key (NK) as a PEM public key;
//   - PCR 16 is quoted and equals H(0…0 || H(pubkey PEM)), binding the NK to this TPM.
func checkIdentityQuote(q *api.QuoteResponse, ak *tpm.Public, nonce string, acc accepted) (*tpm.QuoteData, error) {
	if _, _, err := tpm.HashByName(q.HashAlg); err != nil || !slices.Contains(acc.hash, q.HashAlg) {
		return nil, fmt.Errorf("hash algorithm %q is not accepted (accept_tpm_hash_algs %v)", q.HashAlg, acc.hash)
	}
	if !isAccepted(q.EncAlg, acc.enc) {
		return nil, fmt.Errorf("encryption algorithm %q is not accepted (accept_tpm_encryption_algs %v)", q.EncAlg, acc.enc)
	}
	if !slices.Contains(acc.sign, q.SignAlg) {
		return nil, fmt.Errorf("signing algorithm %q is not accepted (accept_tpm_signing_algs %v)", q.SignAlg, acc.sign)
	}
	quote, err := tpm.ParseQuote(q.Quote)
	if err != nil {
		return nil, err
	}
	data, err := tpm.VerifyQuote(quote, ak, []byte(nonce), q.HashAlg)
	if err != nil {
		return nil, fmt.Errorf("quote does not verify with the registrar's AK: %w", err)
	}
	if q.PubKey == "" {
		return nil, errors.New("the agent sent no public key with its identity quote")
	}
	blk, _ := pem.Decode([]byte(q.PubKey))
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("the agent's public key is not a PEM public key")
	}
	if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		return nil, fmt.Errorf("the agent's public key does not parse: %w", err)
	}
	got, ok := data.PCRs[policy.DataPCR]
	if !ok {
		return nil, errors.New("PCR 16 (the data PCR) is not in the quote")
	}
	want, err := tpm.DataPCRValue(q.HashAlg, []byte(q.PubKey))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("PCR 16 does not bind the agent's public key (got %s, want %s)", hex.EncodeToString(got), hex.EncodeToString(want))
	}
	return data, nil
}
