package softagent

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/tpm"
)

// ErrActivation means TPM2_ActivateCredential refused a credential blob: malformed, made for another
// EK, or bound to another object's Name.
var ErrActivation = errors.New("softagent: credential activation failed")

// EK is a software endorsement key with the TCG default EK template (go-tpm's RSAEKTemplate or
// ECCEKTemplate: a restricted decryption key, AES-128-CFB, SHA-256 names, the standard EK policy), so a
// registrar's tpm.CheckEK accepts it and tpm.MakeCredential encrypts to it. It is safe for concurrent use.
type EK struct {
	rsa    *rsa.PrivateKey
	ecc    *ecdh.PrivateKey
	pub    tpm2.TPMTPublic
	public []byte // TPM2B_PUBLIC
	name   []byte
	hash   crypto.Hash
	bits   int // AES key bits of the symmetric definition
}

// NewEK generates an EK: RSA-2048 (RSA) or NIST P-256 (ECC). Generating an RSA key takes tens of
// milliseconds; fleets can share keys through NewEKWithKey.
func NewEK(alg KeyAlg) (*EK, error) {
	switch alg {
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("softagent: generate EK: %w", err)
		}
		return NewEKWithKey(k)
	case ECC:
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("softagent: generate EK: %w", err)
		}
		return NewEKWithKey(k)
	}
	return nil, fmt.Errorf("%w: EK type %d", ErrBadKey, alg)
}

// NewEKWithKey returns the EK whose private key is key: an *rsa.PrivateKey of 2048 bits, or a P-256
// *ecdh.PrivateKey or *ecdsa.PrivateKey.
func NewEKWithKey(key crypto.PrivateKey) (*EK, error) {
	e := &EK{hash: crypto.SHA256, bits: 128}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() != 2048 {
			return nil, fmt.Errorf("%w: EK RSA-%d, want 2048", ErrBadKey, k.N.BitLen())
		}
		e.rsa = k
		e.pub = tpm2.RSAEKTemplate
		e.pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		if k.E != 65537 {
			d, _ := e.pub.Parameters.RSADetail()
			parms := *d
			parms.Exponent = uint32(k.E)
			e.pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &parms)
		}
	case *ecdsa.PrivateKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		return NewEKWithKey(ek)
	case *ecdh.PrivateKey:
		if k.Curve() != ecdh.P256() {
			return nil, fmt.Errorf("%w: EK curve is not P-256", ErrBadKey)
		}
		e.ecc = k
		raw := k.PublicKey().Bytes()[1:] // X || Y
		e.pub = tpm2.ECCEKTemplate
		e.pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[:32]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[32:]},
		})
	default:
		return nil, fmt.Errorf("%w: EK key %T", ErrBadKey, key)
	}
	e.public = tpm2.Marshal(tpm2.New2B(e.pub))
	name, err := tpm2.ObjectName(&e.pub)
	if err != nil {
		return nil, fmt.Errorf("softagent: EK name: %w", err)
	}
	e.name = name.Buffer
	return e, nil
}

// Public returns the EK's TPM2B_PUBLIC: what Keylime sends base64-encoded as ek_tpm.
func (e *EK) Public() []byte { return append([]byte(nil), e.public...) }

// Name returns the EK's TPM Name (nameAlg || SHA-256 of the public area).
func (e *EK) Name() []byte { return append([]byte(nil), e.name...) }

// QualifiedName returns the EK's qualified name as a primary key of the endorsement hierarchy: the
// parent qualified name for an AK created under it (TPM.SetParentQualifiedName).
func (e *EK) QualifiedName() []byte {
	return QualifiedName(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMRHEndorsement)), e.name)
}

// ActivateCredential is TPM2_ActivateCredential (TPM 2.0 Part 1 §24, Part 3 §12.5) with the AK of t as
// the activated object: it recovers the secret a registrar protected with tpm.MakeCredential for ek and
// the AK's Name. blob is the tpm2-tools credential file Keylime's registrar sends.
func (t *TPM) ActivateCredential(ek *EK, blob []byte) ([]byte, error) {
	return ek.ActivateCredential(t.name, blob)
}

// ActivateCredential recovers the secret in a credential blob (the tpm2-tools credential file) made for
// this EK and an object of Name objectName: it decrypts the seed (RSA-OAEP with label "IDENTITY", or
// ECDH and KDFe), checks the integrity HMAC over the encrypted credential and objectName, and decrypts
// the credential with AES-CFB. Any failure is ErrActivation.
func (e *EK) ActivateCredential(objectName, blob []byte) ([]byte, error) {
	idObject, encSecret, err := tpm.ParseCredentialBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrActivation, err)
	}
	seed, err := e.seed(encSecret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrActivation, err)
	}
	size := e.hash.Size()
	if len(idObject) < 2 || int(binary.BigEndian.Uint16(idObject)) != size || len(idObject) < 2+size+2 {
		return nil, fmt.Errorf("%w: malformed idObject", ErrActivation)
	}
	integrity, encIdentity := idObject[2:2+size], idObject[2+size:]
	mac := hmac.New(e.hash.New, tpm2.KDFa(e.hash, seed, "INTEGRITY", nil, nil, size*8))
	mac.Write(encIdentity)
	mac.Write(objectName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, fmt.Errorf("%w: integrity check failed (another EK or another object's Name)", ErrActivation)
	}
	block, err := aes.NewCipher(tpm2.KDFa(e.hash, seed, "STORAGE", objectName, nil, e.bits))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrActivation, err)
	}
	plain := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(plain, encIdentity)
	if n := int(binary.BigEndian.Uint16(plain)); n != len(plain)-2 || n == 0 || n > size {
		return nil, fmt.Errorf("%w: credential of %d bytes in %d", ErrActivation, n, len(plain)-2)
	}
	return plain[2:], nil
}

// seed recovers the credential's seed from the encrypted secret.
func (e *EK) seed(encSecret []byte) ([]byte, error) {
	if e.rsa != nil {
		seed, err := rsa.DecryptOAEP(e.hash.New(), nil, e.rsa, encSecret, []byte("IDENTITY\x00"))
		if err != nil {
			return nil, fmt.Errorf("OAEP: %w", err)
		}
		return seed, nil
	}
	pt, err := tpm2.Unmarshal[tpm2.TPMSECCPoint](encSecret)
	if err != nil {
		return nil, fmt.Errorf("ephemeral point: %w", err)
	}
	if len(pt.X.Buffer) != 32 || len(pt.Y.Buffer) != 32 || 4+64 != len(encSecret) {
		return nil, errors.New("ephemeral point: not a P-256 point")
	}
	eph, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, pt.X.Buffer...), pt.Y.Buffer...))
	if err != nil {
		return nil, fmt.Errorf("ephemeral point: %w", err)
	}
	z, err := e.ecc.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("ECDH: %w", err)
	}
	ekX := e.ecc.PublicKey().Bytes()[1:33]
	return tpm2.KDFe(e.hash, z, "IDENTITY", pt.X.Buffer, ekX, e.hash.Size()*8), nil
}
