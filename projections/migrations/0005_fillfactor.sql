-- Leave room in each page for one more version of a row, so that an update changing no indexed
-- column (payment status, notes, a participant's copy, an unknown type's seq) can be HOT: the new
-- version goes on the same page and none of the 14 indexes of orders is touched. An order row is
-- about 1.8 KB: 80 % stores 3 rows a page (4 at 100 %) and keeps ~2.5 KB free for the update.
-- Applies to pages filled from now on; there is no production data yet.
ALTER TABLE ${orders} SET (fillfactor = 80);
ALTER TABLE ${participants} SET (fillfactor = 90);
