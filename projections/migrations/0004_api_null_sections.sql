-- The null sections of the nullable sorts (order_number, submitted_at): "nulls last" pages read
-- them by id, so each is an index range of its own rather than a filter over the whole tenant.
CREATE INDEX IF NOT EXISTS orders_order_number_null_idx ON ${orders} (tenant, id)
    WHERE order_number IS NULL;
CREATE INDEX IF NOT EXISTS orders_submitted_null_idx ON ${orders} (tenant, id)
    WHERE submitted_at IS NULL;
