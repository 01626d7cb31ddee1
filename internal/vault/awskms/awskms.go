// Package awskms provides a vault key-encryption key held in AWS KMS: data keys come from
// GenerateDataKey and are unwrapped with Decrypt, so the KEK itself never leaves KMS. The vault's
// associated data travels as the KMS encryption context, which KMS binds into the ciphertext and
// writes to CloudTrail.
package awskms

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyward/keyward/internal/vault"
)

// contextKey names the encryption-context entry that carries the vault's associated data.
const contextKey = "keyward:aad"

// KEK wraps data keys under one KMS key.
type KEK struct {
	client *kms.Client
	keyARN string
}

var (
	_ vault.KEK              = (*KEK)(nil)
	_ vault.DataKeyGenerator = (*KEK)(nil)
)

// New returns the KEK for keyID (a key id, ARN, alias name or alias ARN). It asks KMS for the key's
// ARN, so that the KEK's id is the same however the key is named, and refuses a disabled key or
// one that is not a symmetric encryption key.
func New(ctx context.Context, cfg aws.Config, keyID string) (*KEK, error) {
	client := kms.NewFromConfig(cfg)
	out, err := client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		return nil, fmt.Errorf("describe KMS key %s: %w", keyID, err)
	}
	md := out.KeyMetadata
	if md.KeyState != types.KeyStateEnabled {
		return nil, fmt.Errorf("KMS key %s is %s, not Enabled", keyID, md.KeyState)
	}
	// Some emulators leave KeyUsage out; KMS itself always sends it.
	usageOK := md.KeyUsage == "" || md.KeyUsage == types.KeyUsageTypeEncryptDecrypt
	if !usageOK || md.KeySpec != types.KeySpecSymmetricDefault {
		return nil, fmt.Errorf("KMS key %s must be a symmetric encryption key (is %s, %s)", keyID, md.KeySpec, md.KeyUsage)
	}
	return &KEK{client: client, keyARN: aws.ToString(md.Arn)}, nil
}

// ID implements vault.KEK.
func (k *KEK) ID() string { return "aws-kms:" + k.keyARN }

func encryptionContext(aad []byte) map[string]string {
	return map[string]string{contextKey: string(aad)}
}

// GenerateDataKey implements vault.DataKeyGenerator.
func (k *KEK) GenerateDataKey(ctx context.Context, aad []byte) ([]byte, []byte, error) {
	out, err := k.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(k.keyARN),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: encryptionContext(aad),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("KMS GenerateDataKey: %w", err)
	}
	if len(out.Plaintext) != 32 {
		return nil, nil, errors.New("KMS GenerateDataKey returned a key that is not 256 bits")
	}
	return out.Plaintext, out.CiphertextBlob, nil
}

// Wrap implements vault.KEK with KMS Encrypt (used when rewrapping an existing data key).
func (k *KEK) Wrap(ctx context.Context, dataKey, aad []byte) ([]byte, error) {
	out, err := k.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(k.keyARN),
		Plaintext:         dataKey,
		EncryptionContext: encryptionContext(aad),
	})
	if err != nil {
		return nil, fmt.Errorf("KMS Encrypt: %w", err)
	}
	return out.CiphertextBlob, nil
}

// Unwrap implements vault.KEK with KMS Decrypt, pinned to this KEK's key.
func (k *KEK) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	out, err := k.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(k.keyARN),
		CiphertextBlob:    wrapped,
		EncryptionContext: encryptionContext(aad),
	})
	if err != nil {
		return nil, fmt.Errorf("KMS Decrypt: %w", err)
	}
	return out.Plaintext, nil
}
