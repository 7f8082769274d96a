//! The editable columns of a member (SPEC 1): the one list of them, and [`impl_columns!`],
//! which gives any record with those fields (the stored member, the create and patch inputs)
//! its [`Columns`] accessors. Adding a column is a variant here, an entry in the macro's list and
//! the field on the records and API shapes (the compiler names each one left out); the logic
//! that walks the columns (patch, change unification, the merged profile view, linking values)
//! loops over [`Column::ALL`] and does not change.

use super::attribute::Attribute;

/// A member column an operator may edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    DisplayName,
    DisplayEmail,
    DisplayMobile,
    CustomId,
    LineId,
    ConnectId,
}

/// Number of editable columns.
pub const COLUMN_COUNT: usize = 6;

impl Column {
    /// Every column, in the order of [`Column::index`] (the order of the merged view).
    pub const ALL: [Column; COLUMN_COUNT] = [
        Column::DisplayName,
        Column::DisplayEmail,
        Column::DisplayMobile,
        Column::CustomId,
        Column::LineId,
        Column::ConnectId,
    ];

    /// Returns the column's field name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Column::DisplayName => "display_name",
            Column::DisplayEmail => "display_email",
            Column::DisplayMobile => "display_mobile",
            Column::CustomId => "custom_id",
            Column::LineId => "line_id",
            Column::ConnectId => "connect_id",
        }
    }

    /// Returns the position of the column in per-member column arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Returns the unify-key attribute the column holds, if it is one.
    pub fn attribute(self) -> Option<Attribute> {
        match self {
            Column::DisplayName => None,
            Column::DisplayEmail => Some(Attribute::DisplayEmail),
            Column::DisplayMobile => Some(Attribute::DisplayMobile),
            Column::CustomId => Some(Attribute::CustomId),
            Column::LineId => Some(Attribute::LineId),
            Column::ConnectId => Some(Attribute::ConnectId),
        }
    }

    /// Returns the column holding a unify-key attribute (`None` for `external_member_id`,
    /// which identifies the member and is not editable).
    pub fn of(attribute: Attribute) -> Option<Column> {
        Column::ALL
            .into_iter()
            .find(|c| c.attribute() == Some(attribute))
    }
}

/// Read and write access to a record's editable columns, one exhaustive `match` per record
/// kind, so that code walking the columns never names them.
pub trait Columns {
    /// What one column holds (`Option<String>` on a member, `Option<Option<String>>` on a
    /// partial update).
    type Slot;

    fn column(&self, column: Column) -> &Self::Slot;

    fn column_mut(&mut self, column: Column) -> &mut Self::Slot;
}

/// Implements [`Columns`] for a record whose fields are named after the columns, with `Slot`
/// the type of each: `impl_columns!(Member, Option<String>)`. The variant-to-field list below
/// is the one place that pairs a column with its field name.
#[macro_export]
macro_rules! impl_columns {
    ($record:ty, $slot:ty) => {
        $crate::impl_columns!(@ $record, $slot,
            DisplayName display_name,
            DisplayEmail display_email,
            DisplayMobile display_mobile,
            CustomId custom_id,
            LineId line_id,
            ConnectId connect_id);
    };
    (@ $record:ty, $slot:ty, $($variant:ident $field:ident),*) => {
        impl $crate::engine::Columns for $record {
            type Slot = $slot;

            fn column(&self, column: $crate::engine::Column) -> &$slot {
                match column {
                    $($crate::engine::Column::$variant => &self.$field,)*
                }
            }

            fn column_mut(&mut self, column: $crate::engine::Column) -> &mut $slot {
                match column {
                    $($crate::engine::Column::$variant => &mut self.$field,)*
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_listed_once_in_order() {
        for (i, c) in Column::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let editable: Vec<Attribute> = Attribute::ALL
            .into_iter()
            .filter(|a| a.is_editable())
            .collect();
        let held: Vec<Attribute> = Column::ALL
            .into_iter()
            .filter_map(Column::attribute)
            .collect();
        assert_eq!(editable, held);
        assert_eq!(Column::of(Attribute::ExternalMemberId), None);
        assert_eq!(Column::of(Attribute::LineId), Some(Column::LineId));
    }
}
