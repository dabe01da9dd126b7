//! People v1: people.connections.list (a user's own contacts) and people.listDirectoryPeople
//! (the Workspace directory: users' profiles and shared contacts), with field masks, paging,
//! sync tokens that expire, deleted-person tombstones and the directory-sharing switch.

pub mod list;
pub mod model;

use actix_web::web;

use crate::errors::GoogleError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/people:listDirectoryPeople", web::get().to(list::list_directory_people))
            .route("/people/{person}/connections", web::get().to(list::list_connections))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&GoogleError::rpc(404, "Requested entity was not found.", vec![]))
}
