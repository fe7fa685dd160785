package device

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EK templates and authorisation policies of the TCG EK Credential Profile for TPM Family 2.0
// (version 2.5+, section 2.1.5 and appendix B). Low-range templates (L-x) carry PolicyA:
// PolicySecret(TPM_RH_ENDORSEMENT). High-range templates (H-x) carry PolicyB = PolicyOR(PolicyA,
// PolicyC), where PolicyC is PolicyAuthorizeNV on a TCG policy index; they also set userWithAuth.

// ekTemplate is one standard EK: where its certificate lives and which persistent handles may
// hold the key.
type ekTemplate struct {
	name      string // TCG template name, e.g. "L-1"
	alg       KeyAlg
	certIndex tpm2.TPMHandle   // NV index of the EK certificate
	handles   []tpm2.TPMHandle // persistent handles to look at, in order
	public    tpm2.TPMTPublic
}

// ekTemplates are tried in this order for EK(alg): the first whose certificate index exists wins;
// without any certificate the first (low-range) template of the algorithm is used.
var ekTemplates = []ekTemplate{
	{"L-1", RSA, 0x01c00002, []tpm2.TPMHandle{0x81010001}, tpm2.RSAEKTemplate},
	{"H-1", RSA, 0x01c00012, []tpm2.TPMHandle{0x81010001, 0x81010012}, highRangeRSA2048},
	{"L-2", ECC, 0x01c0000a, []tpm2.TPMHandle{0x81010002}, tpm2.ECCEKTemplate},
	{"H-2", ECC, 0x01c00014, []tpm2.TPMHandle{0x81010002, 0x81010014}, highRangeECC(tpm2.TPMECCNistP256)},
	// swtpm_setup persists its P-384 EK at 0x81010016, next to the certificate index 0x01c00016.
	{"H-3", ECC, 0x01c00016, []tpm2.TPMHandle{0x81010016, 0x81010002}, highRangeECC(tpm2.TPMECCNistP384)},
}

// policyC holds the PolicyC digests (PolicyAuthorizeNV of policy index I-1 and I-2) per name hash.
var policyC = map[tpm2.TPMAlgID][]byte{
	tpm2.TPMAlgSHA256: mustHex("3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde"),
	tpm2.TPMAlgSHA384: mustHex("d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5" +
		"b4947c2d73e63005eed2dc2b3593d165"),
}

// policyA returns the PolicySecret(TPM_RH_ENDORSEMENT) digest for hash alg.
func policyA(alg tpm2.TPMAlgID) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(alg)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// policyB returns PolicyOR(PolicyA, PolicyC) for hash alg and the two branch digests.
func policyB(alg tpm2.TPMAlgID) (digest []byte, branches []tpm2.TPM2BDigest, err error) {
	c, ok := policyC[alg]
	if !ok {
		return nil, nil, fmt.Errorf("no EK PolicyC for hash 0x%x", uint16(alg))
	}
	a, err := policyA(alg)
	if err != nil {
		return nil, nil, err
	}
	branches = []tpm2.TPM2BDigest{{Buffer: a}, {Buffer: c}}
	calc, err := tpm2.NewPolicyCalculator(alg)
	if err != nil {
		return nil, nil, err
	}
	if err := (tpm2.PolicyOr{PHashList: tpm2.TPMLDigest{Digests: branches}}).Update(calc); err != nil {
		return nil, nil, err
	}
	return calc.Hash().Digest, branches, nil
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func mustPolicyB(alg tpm2.TPMAlgID) []byte {
	d, _, err := policyB(alg)
	if err != nil {
		panic(err)
	}
	return d
}

// highRangeAttrs are the object attributes of every high-range EK template (0x000300f2).
var highRangeAttrs = tpm2.TPMAObject{
	FixedTPM:            true,
	FixedParent:         true,
	SensitiveDataOrigin: true,
	UserWithAuth:        true,
	AdminWithPolicy:     true,
	Restricted:          true,
	Decrypt:             true,
}

func aesCFB(bits tpm2.TPMKeyBits) tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, bits),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
}

// highRangeRSA2048 is template H-1: RSA-2048, SHA-256, AES-128-CFB, empty unique.
var highRangeRSA2048 = tpm2.TPMTPublic{
	Type:             tpm2.TPMAlgRSA,
	NameAlg:          tpm2.TPMAlgSHA256,
	ObjectAttributes: highRangeAttrs,
	AuthPolicy:       tpm2.TPM2BDigest{Buffer: mustPolicyB(tpm2.TPMAlgSHA256)},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: aesCFB(128),
		KeyBits:   2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: []byte{}}),
}

// highRangeECC is template H-2 (P-256: SHA-256, AES-128) or H-3 (P-384: SHA-384, AES-256).
func highRangeECC(curve tpm2.TPMECCCurve) tpm2.TPMTPublic {
	nameAlg, bits := tpm2.TPMAlgSHA256, tpm2.TPMKeyBits(128)
	if curve == tpm2.TPMECCNistP384 {
		nameAlg, bits = tpm2.TPMAlgSHA384, 256
	}
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          nameAlg,
		ObjectAttributes: highRangeAttrs,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: mustPolicyB(nameAlg)},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: aesCFB(bits),
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   curve,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: []byte{}},
			Y: tpm2.TPM2BECCParameter{Buffer: []byte{}},
		}),
	}
}

// sameTemplate reports whether pub was made from tmpl: equal in everything but the unique field.
func sameTemplate(pub, tmpl *tpm2.TPMTPublic) bool {
	c := *pub
	c.Unique = tmpl.Unique
	return bytes.Equal(tpm2.Marshal(c), tpm2.Marshal(*tmpl))
}

// ekAuthKind is how the USER role of an EK is authorised.
type ekAuthKind int

const (
	authPolicyA  ekAuthKind = iota + 1 // PolicySecret(endorsement)
	authPolicyB                        // PolicySecret(endorsement), PolicyOR(A, C)
	authPassword                       // non-standard EK with userWithAuth and an unknown policy
)

// ekAuthFor picks the authorisation for an EK from its public area.
func ekAuthFor(pub *tpm2.TPMTPublic) (ekAuthKind, error) {
	if a, err := policyA(pub.NameAlg); err == nil && bytes.Equal(pub.AuthPolicy.Buffer, a) {
		return authPolicyA, nil
	}
	if b, _, err := policyB(pub.NameAlg); err == nil && bytes.Equal(pub.AuthPolicy.Buffer, b) {
		return authPolicyB, nil
	}
	if pub.ObjectAttributes.UserWithAuth {
		return authPassword, nil
	}
	return 0, fmt.Errorf("EK policy %x is neither PolicyA nor PolicyB of the TCG EK profile", pub.AuthPolicy.Buffer)
}

// ekSession returns a one-shot authorisation session for the EK's USER role.
func ekSession(kind ekAuthKind, nameAlg tpm2.TPMAlgID) tpm2.Session {
	if kind == authPassword {
		return tpm2.PasswordAuth(nil)
	}
	return tpm2.Policy(nameAlg, 16, func(tpm transport.TPM, s tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: s,
			NonceTPM:      nonce,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("PolicySecret(endorsement): %w", err)
		}
		if kind != authPolicyB {
			return nil
		}
		_, branches, err := policyB(nameAlg)
		if err != nil {
			return err
		}
		if _, err := (tpm2.PolicyOr{PolicySession: s, PHashList: tpm2.TPMLDigest{Digests: branches}}).Execute(tpm); err != nil {
			return fmt.Errorf("PolicyOR(A, C): %w", err)
		}
		return nil
	})
}
