-- Invoice tax (additive; see docs/api-billing.md "GET /api/billing/invoices").
-- tax_cents: the sum of the invoice's `total_taxes` as Stripe computed them (Stripe Tax, exclusive:
-- `total_cents` includes it). NULL for invoices recorded before this column existed.
ALTER TABLE invoices ADD COLUMN tax_cents INTEGER;
