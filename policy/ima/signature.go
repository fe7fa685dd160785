package ima

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
)

// Signature types of the security.ima xattr (the kernel's evm_ima_xattr_type).
const (
	XattrDigsig         = 3 // EVM_IMA_XATTR_DIGSIG
	XattrPortableDigsig = 5 // EVM_XATTR_PORTABLE_DIGSIG
)

// SignatureHeaderSize is the size of struct signature_v2_hdr.
const SignatureHeaderSize = 9

// Signature verification errors.
var (
	// ErrMalformedSignature: not a version 2 signature_v2_hdr of type 3 or 5 with a consistent size.
	ErrMalformedSignature = errors.New("malformed IMA signature")
	// ErrSignatureHash: the header's hash algorithm is unknown or differs from the digest's.
	ErrSignatureHash = errors.New("IMA signature hash algorithm mismatch")
	// ErrUnknownSignatureKey: no key with the signature's keyid is trusted.
	ErrUnknownSignatureKey = errors.New("no trusted key with the signature's keyid")
	// ErrBadSignature: a key with the keyid exists but the signature does not verify.
	ErrBadSignature = errors.New("IMA signature does not verify")
)

// SignatureHeader is struct signature_v2_hdr (big-endian fields).
type SignatureHeader struct {
	Type     uint8
	Version  uint8
	HashAlgo uint8 // the kernel's hash_algo: 1 md5, 2 sha1, 4 sha256, 5 sha384, 6 sha512, 7 sha224, …
	KeyID    uint32
	Size     uint16
}

// kernelHashNames maps the kernel's hash_algo ids to d-ng algorithm names (what Keylime supports). An
// array, not a map: it is static data, so the package has no init code to run in every keylime process.
var kernelHashNames = [...]string{
	1: "md5", 2: "sha1", 4: "sha256", 5: "sha384", 6: "sha512", 7: "sha224", 18: "streebog256", 19: "streebog512",
}

// kernelHashName returns the algorithm name of a kernel hash_algo id.
func kernelHashName(id uint8) (string, bool) {
	if int(id) >= len(kernelHashNames) || kernelHashNames[id] == "" {
		return "", false
	}
	return kernelHashNames[id], true
}

// ParseSignature splits an ima-sig signature field into its header and signature bytes, checking
// type (3 or 5), version (2) and size.
func ParseSignature(sig []byte) (SignatureHeader, []byte, error) {
	var h SignatureHeader
	if len(sig) < SignatureHeaderSize {
		return h, nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrMalformedSignature, len(sig))
	}
	h = SignatureHeader{
		Type: sig[0], Version: sig[1], HashAlgo: sig[2],
		KeyID: binary.BigEndian.Uint32(sig[3:7]), Size: binary.BigEndian.Uint16(sig[7:9]),
	}
	switch {
	case h.Type != XattrDigsig && h.Type != XattrPortableDigsig:
		return h, nil, fmt.Errorf("%w: type %d (want 3 or 5)", ErrMalformedSignature, h.Type)
	case h.Version != 2:
		return h, nil, fmt.Errorf("%w: version %d (only 2 is supported)", ErrMalformedSignature, h.Version)
	case int(h.Size) != len(sig)-SignatureHeaderSize:
		return h, nil, fmt.Errorf("%w: header says %d signature bytes, %d follow", ErrMalformedSignature, h.Size, len(sig)-SignatureHeaderSize)
	}
	return h, sig[SignatureHeaderSize:], nil
}

// VerifySignature verifies an IMA signature (the ima-sig "sig" field) over a file digest of
// algorithm digestAlg ("sha256") with the keys of the given keyrings, as the kernel and Keylime do:
// the header's hash algorithm must be digestAlg, and some key with the header's keyid must verify the
// signature (RSA: PKCS#1 v1.5 over the digest; ECDSA: DER signature over the digest). It returns nil
// or an error wrapping ErrMalformedSignature, ErrSignatureHash, ErrUnknownSignatureKey or
// ErrBadSignature.
func VerifySignature(sig []byte, digestAlg string, digest []byte, rings ...*Keyring) error {
	h, s, err := ParseSignature(sig)
	if err != nil {
		return err
	}
	name, ok := kernelHashName(h.HashAlgo)
	if !ok {
		return fmt.Errorf("%w: unknown hash_algo %d", ErrSignatureHash, h.HashAlgo)
	}
	if name != digestAlg {
		return fmt.Errorf("%w: signature over %s, digest is %s", ErrSignatureHash, name, digestAlg)
	}
	hash := hashByName(name)
	if hash == 0 || !hash.Available() {
		return fmt.Errorf("%w: %s is not available", ErrSignatureHash, name)
	}
	found := false
	for _, r := range rings {
		if r == nil {
			continue
		}
		for i := range r.keys {
			k := &r.keys[i]
			if k.ID != h.KeyID {
				continue
			}
			found = true
			if verifyDigest(k.Public, hash, digest, s) {
				return nil
			}
		}
	}
	if !found {
		return fmt.Errorf("%w 0x%08x", ErrUnknownSignatureKey, h.KeyID)
	}
	return fmt.Errorf("%w with the key(s) of keyid 0x%08x", ErrBadSignature, h.KeyID)
}

func verifyDigest(pub crypto.PublicKey, hash crypto.Hash, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, hash, digest, sig) == nil
	case *ecdsa.PublicKey:
		return len(digest) == hash.Size() && ecdsa.VerifyASN1(k, digest, sig)
	}
	return false
}

// SignatureV2 builds an ima-sig signature field (type 3, version 2) around a raw signature, for tests
// and tools that sign files: hashAlgo is the digest's algorithm name ("sha256").
func SignatureV2(hashAlgo string, keyID uint32, sig []byte) ([]byte, error) {
	var id uint8
	for k, v := range kernelHashNames {
		if v != "" && v == hashAlgo {
			id = uint8(k)
		}
	}
	if id == 0 || len(sig) > 0xffff {
		return nil, fmt.Errorf("%w: hash %q, %d signature bytes", ErrMalformedSignature, hashAlgo, len(sig))
	}
	out := []byte{XattrDigsig, 2, id}
	out = binary.BigEndian.AppendUint32(out, keyID)
	out = binary.BigEndian.AppendUint16(out, uint16(len(sig)))
	return append(out, sig...), nil
}
