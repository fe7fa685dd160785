package device

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// AKFile is the file in the agent's data directory that keeps the AK blobs between runs.
const AKFile = "ak.json"

// ErrAKUnusable means the AK stored in the data directory cannot be used with this TPM and EK:
// the file is damaged, holds another key type, was made under another EK, or the TPM refuses to
// load it (for example after a TPM clear, which changes the endorsement seed). LoadOrCreateAK never
// replaces such an AK by itself, because a new AK means a new identity at the registrar; remove the
// file to create a new one and register again.
var ErrAKUnusable = errors.New("stored AK cannot be used")

// AK is an attestation key: a restricted signing key under the EK, loaded until Close.
type AK struct {
	// Alg is the key type: RSA (RSASSA-SHA256, 2048 bits) or ECC (ECDSA-SHA256, P-256).
	Alg KeyAlg
	// Handle is the transient handle of the loaded key.
	Handle tpm2.TPMHandle
	// Name is the TPM Name: nameAlg (SHA-256) || digest of the public area.
	Name []byte
	// Public is the public area (TPMT_PUBLIC).
	Public tpm2.TPMTPublic
	// PublicBytes is the marshalled TPM2B_PUBLIC: what Keylime sends base64-encoded as aik_tpm.
	PublicBytes []byte
}

// PublicKey returns the AK public key as an *rsa.PublicKey or *ecdsa.PublicKey.
func (a *AK) PublicKey() (crypto.PublicKey, error) { return tpm2.Pub(a.Public) }

func (a *AK) handle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: a.Handle, Name: tpm2.TPM2BName{Buffer: a.Name}, Auth: tpm2.PasswordAuth(nil)}
}

// akTemplate returns the AK template of Keylime's tpm2_createak: fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, restricted, sign (0x00050072), SHA-256 name, RSA-2048
// RSASSA-SHA256 or NIST P-256 ECDSA-SHA256.
func akTemplate(alg KeyAlg) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch alg {
	case RSA:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: []byte{}}),
		}, nil
	case ECC:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: []byte{}},
				Y: tpm2.TPM2BECCParameter{Buffer: []byte{}},
			}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("AK: unsupported algorithm %v", alg)
}

// akRecord is the content of AKFile.
type akRecord struct {
	Version int    `json:"version"`
	Alg     string `json:"alg"`
	EKName  string `json:"ek_name"` // hex Name of the parent EK
	Public  []byte `json:"public"`  // TPM2B_PUBLIC, base64 in JSON
	Private []byte `json:"private"` // TPM2B_PRIVATE, base64 in JSON
}

// parseAKRecord decodes and checks AKFile contents: the public area must be an AK of alg with the
// attributes of akTemplate, and the private blob a well-formed TPM2B.
func parseAKRecord(b []byte, alg KeyAlg) (*akRecord, *tpm2.TPMTPublic, error) {
	var rec akRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, nil, err
	}
	if rec.Version != 1 {
		return nil, nil, fmt.Errorf("version %d, want 1", rec.Version)
	}
	if rec.Alg != alg.String() {
		return nil, nil, fmt.Errorf("holds an %s AK, %s requested", rec.Alg, alg)
	}
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](rec.Public)
	if err != nil {
		return nil, nil, fmt.Errorf("public: %w", err)
	}
	if len(tpm2.Marshal(pub2b)) != len(rec.Public) {
		return nil, nil, errors.New("public: trailing bytes")
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("public: %w", err)
	}
	tmpl, err := akTemplate(alg)
	if err != nil {
		return nil, nil, err
	}
	if !sameTemplate(pub, &tmpl) {
		return nil, nil, errors.New("public area is not an AK of the expected template")
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](rec.Private)
	if err != nil || len(priv.Buffer) == 0 || len(tpm2.Marshal(priv)) != len(rec.Private) {
		return nil, nil, errors.New("private: malformed TPM2B_PRIVATE")
	}
	return &rec, pub, nil
}

// LoadOrCreateAK loads the AK kept in dir/ak.json under ek, or, when that file does not exist,
// creates a new AK of type alg under ek (authorised with the EK policy, like Keylime's
// tpm2_createak -C ek), saves its blobs there (mode 0600, written atomically) and reports
// created=true. Its Name therefore stays the same across agent restarts. A stored AK that cannot
// be used yields an error wrapping ErrAKUnusable and is left in place. The AK stays loaded until
// Close; asking again for the same AK returns the loaded one.
func (t *TPM) LoadOrCreateAK(dir string, ek *EK, alg KeyAlg) (ak *AK, created bool, err error) {
	if ek == nil {
		return nil, false, errors.New("AK: no EK")
	}
	tmpl, err := akTemplate(alg)
	if err != nil {
		return nil, false, err
	}
	tpm, err := t.lock()
	if err != nil {
		return nil, false, err
	}
	defer t.unlock()
	path := filepath.Join(dir, AKFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		ak, err := t.loadAK(tpm, b, ek, alg)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: %w", ErrAKUnusable, path, err)
		}
		return ak, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read AK: %w", err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("AK directory: %w", err)
	}
	cr, err := tpm2.Create{ParentHandle: ek.authHandle(), InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		return nil, false, fmt.Errorf("create AK under EK: %w", err)
	}
	rec := akRecord{
		Version: 1,
		Alg:     alg.String(),
		EKName:  hex.EncodeToString(ek.Name),
		Public:  tpm2.Marshal(cr.OutPublic),
		Private: tpm2.Marshal(cr.OutPrivate),
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, false, err
	}
	ak, err = t.loadAK(tpm, data, ek, alg)
	if err != nil {
		return nil, false, fmt.Errorf("load new AK: %w", err)
	}
	if err := writeFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		t.forgetAK(tpm, ak)
		return nil, false, fmt.Errorf("save AK: %w", err)
	}
	return ak, true, nil
}

// loadAK loads the AK described by AKFile contents b under ek, or returns it when already loaded.
func (t *TPM) loadAK(tpm transport.TPM, b []byte, ek *EK, alg KeyAlg) (*AK, error) {
	rec, pub, err := parseAKRecord(b, alg)
	if err != nil {
		return nil, err
	}
	if rec.EKName != hex.EncodeToString(ek.Name) {
		return nil, fmt.Errorf("made under EK %s, this EK is %x", rec.EKName, ek.Name)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, err
	}
	if ak := t.aks[hex.EncodeToString(name.Buffer)]; ak != nil {
		return ak, nil
	}
	pub2b, _ := tpm2.Unmarshal[tpm2.TPM2BPublic](rec.Public)
	priv, _ := tpm2.Unmarshal[tpm2.TPM2BPrivate](rec.Private)
	lr, err := tpm2.Load{ParentHandle: ek.authHandle(), InPrivate: *priv, InPublic: *pub2b}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM2_Load under EK: %w", err)
	}
	if !bytes.Equal(lr.Name.Buffer, name.Buffer) {
		_, _ = tpm2.FlushContext{FlushHandle: lr.ObjectHandle}.Execute(tpm)
		return nil, fmt.Errorf("loaded AK Name %x differs from its public area's %x", lr.Name.Buffer, name.Buffer)
	}
	ak := &AK{
		Alg:         alg,
		Handle:      lr.ObjectHandle,
		Name:        name.Buffer,
		Public:      *pub,
		PublicBytes: rec.Public,
	}
	t.transient[ak.Handle] = true
	t.aks[hex.EncodeToString(ak.Name)] = ak
	return ak, nil
}

// forgetAK flushes a loaded AK and drops it from the caches.
func (t *TPM) forgetAK(tpm transport.TPM, ak *AK) {
	_, _ = tpm2.FlushContext{FlushHandle: ak.Handle}.Execute(tpm)
	delete(t.transient, ak.Handle)
	delete(t.aks, hex.EncodeToString(ak.Name))
}

// ActivateCredential runs TPM2_ActivateCredential with the AK as the activation object and the
// EK as the decryption key, and returns the secret recovered from a MakeCredential challenge
// (credential blob idObject and encrypted seed encSecret). The TPM releases it only when the
// challenge was made for this EK and this AK's Name.
func (t *TPM) ActivateCredential(ek *EK, ak *AK, idObject, encSecret []byte) ([]byte, error) {
	if ek == nil || ak == nil {
		return nil, errors.New("activate credential: EK and AK required")
	}
	tpm, err := t.lock()
	if err != nil {
		return nil, err
	}
	defer t.unlock()
	r, err := tpm2.ActivateCredential{
		ActivateHandle: ak.handle(),
		KeyHandle:      ek.authHandle(),
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("TPM2_ActivateCredential: %w", err)
	}
	return r.CertInfo.Buffer, nil
}

// writeFileAtomic writes data to path through a synced temporary file in the same directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// akSigHash returns the hash of the AK's signing scheme, which also digests the PCRs in a quote.
func akSigHash(pub *tpm2.TPMTPublic) (crypto.Hash, error) {
	var alg tpm2.TPMIAlgHash
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return 0, err
		}
		s, err := parms.Scheme.Details.RSASSA()
		if err != nil {
			return 0, fmt.Errorf("AK scheme: %w", err)
		}
		alg = s.HashAlg
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return 0, err
		}
		s, err := parms.Scheme.Details.ECDSA()
		if err != nil {
			return 0, fmt.Errorf("AK scheme: %w", err)
		}
		alg = s.HashAlg
	default:
		return 0, fmt.Errorf("AK type 0x%x", uint16(pub.Type))
	}
	return alg.Hash()
}
