-- A catalogue proposal that removes, renames or retypes a field a grant in force lists is
-- refused unless it names the grants it amends (Art. 13, 24): on approval, in the approving
-- transaction, those grants lose the fields the change drops, each amendment is filed
-- (Art. 18) and each grantee told. NULL when the proposal amends none, so that the proposals
-- recorded before this column existed keep matching their audit-ledger images.
ALTER TABLE catalogue_proposals ADD COLUMN amends_grants bigint[];
