package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// errNotFast means parsePublicFast does not decode an input; ParsePublic then hands it
// to go-tpm's decoder (parsePublicReflect), which decides.
var errNotFast = errors.New("not decoded by the fast path")

// parsePublicFast is ParsePublic for the TPMT_PUBLIC shapes keys have: RSA or ECC;
// a NULL or AES symmetric definition; a NULL asymmetric scheme or one go-tpm knows;
// a NULL KDF or one with a hash. It decodes by hand to the same tpm2.TPMTPublic as
// go-tpm's reflection decoder, insisting that every byte is used (so the bytes are
// what that value marshals to), runs the same checks and computes the key directly.
// Any input it does not decode in full it leaves to go-tpm: it returns errNotFast.
// The caller has checked the size prefix (checkPublicSize).
func parsePublicFast(tpm2b []byte) (*Public, error) {
	blk := new(publicBlock)
	n := len(tpm2b)
	// One allocation for Bytes, the Name after it, and the decoded buffers (which
	// point into the TPMT_PUBLIC part of Bytes).
	buf := make([]byte, n+2+sha512.Size)
	copy(buf, tpm2b)
	inner := buf[2:n:n]
	if !blk.decode(inner) {
		return nil, errNotFast
	}
	pub := &blk.p.Public
	if err := checkPublic(pub); err != nil {
		return nil, err
	}
	key, err := blk.key()
	if err != nil {
		return nil, err
	}
	name := binary.BigEndian.AppendUint16(buf[n:n], uint16(pub.NameAlg))
	switch pub.NameAlg { // checkPublic accepted one of these
	case tpm2.TPMAlgSHA256:
		sum := sha256.Sum256(inner)
		name = append(name, sum[:]...)
	case tpm2.TPMAlgSHA384:
		sum := sha512.Sum384(inner)
		name = append(name, sum[:]...)
	default:
		sum := sha512.Sum512(inner)
		name = append(name, sum[:]...)
	}
	blk.p.Bytes = buf[:n:n]
	blk.p.Name = name[:len(name):len(name)]
	blk.p.Key = key
	return &blk.p, nil
}

// publicBlock is a Public together with everything the unions of its TPMTPublic
// and its key point to, so that a parse allocates them at once.
type publicBlock struct {
	p Public

	rsa   tpm2.TPMSRSAParms
	ecc   tpm2.TPMSECCParms
	rsaID tpm2.TPM2BPublicKeyRSA
	eccID tpm2.TPMSECCPoint

	// Members of TPMU_ASYM_SCHEME.
	rsassa tpm2.TPMSSigSchemeRSASSA
	rsapss tpm2.TPMSSigSchemeRSAPSS
	oaep   tpm2.TPMSEncSchemeOAEP
	ecdsa  tpm2.TPMSSigSchemeECDSA
	ecdh   tpm2.TPMSKeySchemeECDH
	ecmqv  tpm2.TPMSKeySchemeECMQV
	ecdaa  tpm2.TPMSSchemeECDAA
	rsaes  tpm2.TPMSEncSchemeRSAES

	// Members of TPMU_KDF_SCHEME.
	mgf1         tpm2.TPMSKDFSchemeMGF1
	kdfECDH      tpm2.TPMSKDFSchemeECDH
	kdf1SP80056A tpm2.TPMSKDFSchemeKDF1SP80056A
	kdf2         tpm2.TPMSKDFSchemeKDF2
	kdf1SP800108 tpm2.TPMSKDFSchemeKDF1SP800108

	rsaKey rsa.PublicKey
	n      big.Int
}

// decode decodes b as a TPMT_PUBLIC into blk.p.Public, reporting whether b is
// exactly one TPMT_PUBLIC of a shape it knows. Buffers point into b.
func (blk *publicBlock) decode(b []byte) bool {
	r := reader{b: b}
	pub := &blk.p.Public
	pub.Type = tpm2.TPMAlgID(r.u16())
	pub.NameAlg = tpm2.TPMAlgID(r.u16())
	pub.ObjectAttributes = objectAttributes(r.u32())
	pub.AuthPolicy.Buffer = r.tpm2b(maxTPM2B)
	var ok bool
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p := &blk.rsa
		if p.Symmetric, ok = r.symDefObject(); !ok {
			return false
		}
		p.Scheme.Scheme = tpm2.TPMAlgID(r.u16())
		if p.Scheme.Details, ok = blk.asymScheme(&r, p.Scheme.Scheme); !ok {
			return false
		}
		p.KeyBits = tpm2.TPMKeyBits(r.u16())
		p.Exponent = r.u32()
		blk.rsaID.Buffer = r.tpm2b(maxTPM2B)
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, p)
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &blk.rsaID)
	case tpm2.TPMAlgECC:
		p := &blk.ecc
		if p.Symmetric, ok = r.symDefObject(); !ok {
			return false
		}
		p.Scheme.Scheme = tpm2.TPMAlgID(r.u16())
		if p.Scheme.Details, ok = blk.asymScheme(&r, p.Scheme.Scheme); !ok {
			return false
		}
		p.CurveID = tpm2.TPMECCCurve(r.u16())
		p.KDF.Scheme = tpm2.TPMAlgID(r.u16())
		if p.KDF.Details, ok = blk.kdfScheme(&r, p.KDF.Scheme); !ok {
			return false
		}
		blk.eccID.X.Buffer = r.tpm2b(maxTPM2B)
		blk.eccID.Y.Buffer = r.tpm2b(maxTPM2B)
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, p)
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &blk.eccID)
	default:
		return false
	}
	return r.done() == nil
}

// asymScheme decodes the TPMU_ASYM_SCHEME selected by alg, as go-tpm does: NULL
// selects nothing, every other member carries a hash (ECDAA also a count) except
// RSAES, which is empty.
func (blk *publicBlock) asymScheme(r *reader, alg tpm2.TPMAlgID) (tpm2.TPMUAsymScheme, bool) {
	switch alg {
	case tpm2.TPMAlgNull:
		return tpm2.TPMUAsymScheme{}, true
	case tpm2.TPMAlgRSASSA:
		blk.rsassa.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.rsassa), true
	case tpm2.TPMAlgRSAPSS:
		blk.rsapss.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.rsapss), true
	case tpm2.TPMAlgOAEP:
		blk.oaep.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.oaep), true
	case tpm2.TPMAlgECDSA:
		blk.ecdsa.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.ecdsa), true
	case tpm2.TPMAlgECDH:
		blk.ecdh.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.ecdh), true
	case tpm2.TPMAlgECMQV:
		blk.ecmqv.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUAsymScheme(alg, &blk.ecmqv), true
	case tpm2.TPMAlgECDAA:
		blk.ecdaa.HashAlg = tpm2.TPMAlgID(r.u16())
		blk.ecdaa.Count = r.u16()
		return tpm2.NewTPMUAsymScheme(alg, &blk.ecdaa), true
	case tpm2.TPMAlgRSAES:
		return tpm2.NewTPMUAsymScheme(alg, &blk.rsaes), true
	default:
		return tpm2.TPMUAsymScheme{}, false
	}
}

// kdfScheme decodes the TPMU_KDF_SCHEME selected by alg: nothing for NULL, else a hash.
func (blk *publicBlock) kdfScheme(r *reader, alg tpm2.TPMAlgID) (tpm2.TPMUKDFScheme, bool) {
	switch alg {
	case tpm2.TPMAlgNull:
		return tpm2.TPMUKDFScheme{}, true
	case tpm2.TPMAlgMGF1:
		blk.mgf1.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUKDFScheme(alg, &blk.mgf1), true
	case tpm2.TPMAlgECDH:
		blk.kdfECDH.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUKDFScheme(alg, &blk.kdfECDH), true
	case tpm2.TPMAlgKDF1SP80056A:
		blk.kdf1SP80056A.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUKDFScheme(alg, &blk.kdf1SP80056A), true
	case tpm2.TPMAlgKDF2:
		blk.kdf2.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUKDFScheme(alg, &blk.kdf2), true
	case tpm2.TPMAlgKDF1SP800108:
		blk.kdf1SP800108.HashAlg = tpm2.TPMAlgID(r.u16())
		return tpm2.NewTPMUKDFScheme(alg, &blk.kdf1SP800108), true
	default:
		return tpm2.TPMUKDFScheme{}, false
	}
}

// key returns the public key of a decoded and checked (checkPublic) public area,
// refusing an ECC point that is not on its curve.
func (blk *publicBlock) key() (crypto.PublicKey, error) {
	if blk.p.Public.Type == tpm2.TPMAlgRSA {
		e := int(blk.rsa.Exponent)
		if e == 0 {
			e = 65537 // the TPM default, as in tpm2.RSAPub
		}
		blk.rsaKey = rsa.PublicKey{N: blk.n.SetBytes(blk.rsaID.Buffer), E: e}
		return &blk.rsaKey, nil
	}
	var curve elliptic.Curve
	switch blk.ecc.CurveID {
	case tpm2.TPMECCNistP256:
		curve = elliptic.P256()
	case tpm2.TPMECCNistP384:
		curve = elliptic.P384()
	default: // checkECC accepted only P-256, P-384 and P-521
		curve = elliptic.P521()
	}
	// SEC 1 uncompressed point; checkECC checked that X and Y are padded to the curve size.
	var pt [1 + 2*66]byte
	pt[0] = 4
	k := 1 + copy(pt[1:], blk.eccID.X.Buffer)
	k += copy(pt[k:], blk.eccID.Y.Buffer)
	key, err := ecdsa.ParseUncompressedPublicKey(curve, pt[:k])
	if err != nil {
		return nil, fmt.Errorf("%w: ECC point: %w", ErrBadPublic, err)
	}
	return key, nil
}

// objectAttributes is the TPMA_OBJECT go-tpm decodes from v: the named bits as
// fields, the others as reserved bits.
func objectAttributes(v uint32) tpm2.TPMAObject {
	a := tpm2.TPMAObject{
		FixedTPM:             v&attrFixedTPM != 0,
		STClear:              v&attrSTClear != 0,
		FixedParent:          v&attrFixedParent != 0,
		SensitiveDataOrigin:  v&attrSensitiveDataOrigin != 0,
		UserWithAuth:         v&attrUserWithAuth != 0,
		AdminWithPolicy:      v&attrAdminWithPolicy != 0,
		FirmwareLimited:      v&attrFirmwareLimited != 0,
		NoDA:                 v&attrNoDA != 0,
		EncryptedDuplication: v&attrEncryptedDuplication != 0,
		Restricted:           v&attrRestricted != 0,
		Decrypt:              v&attrDecrypt != 0,
		SignEncrypt:          v&attrSign != 0,
		X509Sign:             v&attrX509Sign != 0,
	}
	for r := v &^ knownAttrs; r != 0; r &= r - 1 {
		a.SetReservedBit(bits.TrailingZeros32(r), true)
	}
	return a
}

// knownAttrs are the TPMA_OBJECT bits tpm2.TPMAObject has fields for.
const knownAttrs = attrFixedTPM | attrSTClear | attrFixedParent | attrSensitiveDataOrigin |
	attrUserWithAuth | attrAdminWithPolicy | attrFirmwareLimited | attrNoDA |
	attrEncryptedDuplication | attrRestricted | attrDecrypt | attrSign | attrX509Sign

// aesSymDetails is the TPMU_SYM_DETAILS go-tpm decodes for AES (an empty member).
// go-tpm has no constructor for it (NewTPMUSymDetails returns a TPMUSymMode), so it
// is taken once from go-tpm's own decoding of a TPMT_SYM_DEF_OBJECT. Its content is
// empty, so every parsed key can share it.
var aesSymDetails = sync.OnceValues(func() (tpm2.TPMUSymDetails, error) {
	s, err := tpm2.Unmarshal[tpm2.TPMTSymDefObject]([]byte{0x00, 0x06, 0x00, 0x80, 0x00, 0x43}) // AES-128-CFB
	if err != nil {
		return tpm2.TPMUSymDetails{}, err
	}
	return s.Details, nil
})

// maxTPM2B is the largest buffer a TPM2B's u16 size can give: tpm2b(maxTPM2B) bounds nothing.
const maxTPM2B = 1<<16 - 1

// symDefObject decodes a TPMT_SYM_DEF_OBJECT whose algorithm is NULL or AES.
func (r *reader) symDefObject() (tpm2.TPMTSymDefObject, bool) {
	alg := tpm2.TPMAlgID(r.u16())
	switch alg {
	case tpm2.TPMAlgNull:
		return tpm2.TPMTSymDefObject{Algorithm: alg}, true
	case tpm2.TPMAlgAES:
		details, err := aesSymDetails()
		if err != nil {
			return tpm2.TPMTSymDefObject{}, false
		}
		keyBits := tpm2.TPMKeyBits(r.u16())
		mode := tpm2.TPMAlgID(r.u16())
		return tpm2.TPMTSymDefObject{
			Algorithm: alg,
			KeyBits:   tpm2.NewTPMUSymKeyBits(alg, keyBits),
			Mode:      tpm2.NewTPMUSymMode(alg, mode),
			Details:   details,
		}, true
	default:
		return tpm2.TPMTSymDefObject{}, false
	}
}
