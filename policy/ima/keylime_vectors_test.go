package ima

// Entries from keylime's test/test_ima_verification.py and test/test_ima_ast.py.

// keylimeMeasurements are three ima-sig lines without signatures (MEASUREMENTS).
var keylimeMeasurements = []string{
	"10 0c8a706a75a5689c1e168f0a573a3cbec33061b5 ima-sig sha256:e4cb9f5709c88376b5fc3743cd88e76b9aae8f3d992d845678de5215edb31216 boot_aggregate ",
	"10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ",
	"10 f8a7b32dba2cb3a5437786d7f9d5caee8db3115b ima-sig sha256:cd026b58efdf66658685430ff526490d54a430a3f0066a35ac26a8acab66c55d /lib/modules/5.4.48-openpower1/kernel/drivers/gpu/drm/drm_panel_orientation_quirks.ko ",
}

// keylimeMeasurementPCRs are the SHA-1 PCR 10 values after each of keylimeMeasurements.
var keylimeMeasurementPCRs = []string{
	"99240d2a29b518dcce58d80f3eb425d0910723fc",
	"e8686d0a97a6c7ddf977e8ec6fe868b0f62e550e",
	"dff39e2db052e00d11f45770bb127c4053e14f32",
}

// keylimeSigRSA is /usr/bin/dd signed with test/data/ima_keys/rsa2048.pem (keyid f3452d23).
const keylimeSigRSA = "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f"

// keylimeSigEC is /usr/bin/zmore signed with the secp256k1 key (keyid 531f4025).
const keylimeSigEC = "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402500483046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3"

// keylimeBadSig is keylimeSigEC with a corrupted size field (and the old template hash).
const keylimeBadSig = "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402548003046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3"

// keylimeKeyring loads an EC P-256 certificate onto the .ima keyring (KEYRINGS).
const keylimeKeyring = "10 978351440c6c8a17568f0c366b9ede28efd14f8c ima-buf sha256:a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a .ima 308201d130820178a003020102020101300906072a8648ce3d0401301b3119301706035504030c1054657374696e672d45434453412d4341301e170d3231303631313133353831365a170d3232303631313133353831365a3021311f301d06035504030c1665636473612d63612d7369676e65642d65632d6b65793059301306072a8648ce3d020106082a8648ce3d030107034200044ce55be36765b59de2767f6d6721be8bea8e3db4ccc25ab76c30f5d1c11752ae1699cc39d31b378f69fecbe65ce1eb09e075f840fe4c052bafb9039742b76202a381a73081a430090603551d1304023000301d0603551d0e04160414b6fb3c083d19695be441c5f59afb95742cb6058c30560603551d23044f304d80140a51da379e45bd7ac623c3f765b53e1e2dde5195a11fa41d301b3119301706035504030c1054657374696e672d45434453412d434182142bb351b0d645e4d8594316ac3c96fc6d9c83791530130603551d25040c300a06082b06010505070302300b0603551d0f040403020780300906072a8648ce3d04010348003045022033d47b623c9feefab7d6e68b001ac6463433f99b61ce7b951a32da065a5d17af022100f3d73e38070053aec63a941ed36ae0dcfa25ed9cd538c459732a7e782132a4ca"

// keylimeKeyringString is IMA_KEYRING_STRING: the RSA test key and the secp256k1 test key.
const keylimeKeyringString = `{"pubkeys": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1cD7bW5tX5qIVgWskS5tzY+XpqWzcW6HFq5npj8dHFIWsAJJCUdoSU631hkyY8HP/RfXDPq/J4IeKvx35EVXj49t1Z1FTJBgUlEbkKvqm0rY6jo7PnJ6BsDRrauXtiEXVKNXcWXDk8ES+9v9Cz26BJYAr+5Xgm2aEyAbj8GhicxUZfsjDm8eJ7ZnQKuhF7jejG5dYAYxnBVu99bQJHI5Fsu3dAjGbys9v7ToNbonS+1bJXdHyEE0swhxBOPvvV6vx5CzRNw1Sou3rT19T4j8wpsFOyYXVcbbRVBAmBE2Qy2UHvojFqaJN/A9lztllyER1S5heGG6CxK3GoR6pkOXAQIDAQAB", "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEnNH3Y/xOTwRRd8D6hpodRLnVx71qDTLvJHouno7nU7JSzcXWN1PxK+HQEh1V7sMdwBER4KFKE635JTv6C+BRBg=="], "keyids": [4081397027, 1394556965]}`

// keylimeTestPolicy is RUNTIME_POLICY_TEST (with the fields its Python dict leaves out).
func keylimeTestPolicy() *RuntimePolicy {
	p := policyWith(map[string][]string{
		"boot_aggregate": {"e4cb9f5709c88376b5fc3743cd88e76b9aae8f3d992d845678de5215edb31216"},
		"/lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko":                {"f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e"},
		"/lib/modules/5.4.48-openpower1/kernel/drivers/gpu/drm/drm_panel_orientation_quirks.ko": {"cd026b58efdf66658685430ff526490d54a430a3f0066a35ac26a8acab66c55d"},
		"/usr/bin/dd":    {"d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"},
		"/usr/bin/zmore": {"b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b"},
		"/usr/bin/zless": {"233ad3a8e77c63a7d9a56063ec2cad1eafa58850"},
	})
	p.Keyrings[".ima"] = []string{"a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a"}
	return p
}

// keylimeWrongPolicy is RUNTIME_POLICY_WRONG: other digests for dd and zmore.
func keylimeWrongPolicy() *RuntimePolicy {
	return policyWith(map[string][]string{
		"/usr/bin/dd":    {"bad05d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"},
		"/usr/bin/zmore": {"bad00b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b"},
	})
}

// keylimeExcludes is EXCLUDES.
var keylimeExcludes = []string{
	"boot_aggregate",
	"/lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko",
	"/lib/modules/5.4.48-openpower1/kernel/drivers/gpu/drm/drm_panel_orientation_quirks.ko",
	"/usr/bin/dd",
	"/usr/bin/zmore",
	"/usr/bin/zless",
}
