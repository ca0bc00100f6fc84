//! Checks the shared test harness itself: the per-process S3 server, bucket creation and the
//! object helpers the filesystem tests rely on, plus the mount-table parsing. None of these
//! tests mount anything.

mod common;

use std::path::Path;

use tokio::task::JoinSet;

#[tokio::test]
async fn server_round_trips_an_object() {
    let client = common::s3_client().await;
    let bucket = common::new_bucket("roundtrip").await;

    common::put_object(&client, &bucket, "hello.txt", b"hello, bucket\n".to_vec()).await;
    assert_eq!(
        common::get_object(&client, &bucket, "hello.txt").await,
        b"hello, bucket\n"
    );
    assert_eq!(
        common::list_keys(&client, &bucket, "").await,
        vec!["hello.txt".to_string()]
    );
}

#[tokio::test]
async fn zero_byte_directory_marker_is_listed_under_its_own_name() {
    let client = common::s3_client().await;
    let bucket = common::new_bucket("dir-marker").await;

    common::put_object(&client, &bucket, "dir/", Vec::new()).await;
    common::put_object(&client, &bucket, "dir/file", b"x".to_vec()).await;

    assert!(common::get_object(&client, &bucket, "dir/").await.is_empty());
    let head = client
        .head_object()
        .bucket(&bucket)
        .key("dir/")
        .send()
        .await
        .expect("HeadObject dir/");
    assert_eq!(head.content_length(), Some(0));
    assert_eq!(
        common::list_keys(&client, &bucket, "dir/").await,
        vec!["dir/".to_string(), "dir/file".to_string()]
    );
}

#[tokio::test]
async fn listing_returns_all_hundred_keys_in_order() {
    let client = common::s3_client().await;
    let bucket = common::new_bucket("hundred").await;

    let mut uploads = JoinSet::new();
    for i in 0..100 {
        let client = client.clone();
        let bucket = bucket.clone();
        uploads.spawn(async move {
            let key = format!("many/{i:03}");
            common::put_object(&client, &bucket, &key, key.clone().into_bytes()).await;
        });
    }
    while let Some(done) = uploads.join_next().await {
        done.expect("upload task");
    }
    common::put_object(&client, &bucket, "other", b"not under the prefix".to_vec()).await;

    let expected: Vec<String> = (0..100).map(|i| format!("many/{i:03}")).collect();
    assert_eq!(common::list_keys(&client, &bucket, "many/").await, expected);
    assert_eq!(common::list_keys(&client, &bucket, "").await.len(), 101);
    assert_eq!(
        common::get_object(&client, &bucket, "many/042").await,
        b"many/042"
    );

    // Small pages force the continuation-token path the helper follows.
    let mut pages = 0;
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&bucket)
            .prefix("many/")
            .max_keys(30)
            .set_continuation_token(token.take())
            .send()
            .await
            .expect("ListObjectsV2 page");
        pages += 1;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
        match page.next_continuation_token() {
            Some(next) => token = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn new_bucket_names_are_unique_and_valid() {
    let tags = [
        "plain",
        "Mixed_Case and spaces!",
        "",
        "a-very-long-tag-that-would-push-the-bucket-name-past-sixty-three-characters",
    ];
    let mut names = Vec::new();
    for tag in tags {
        names.push(common::new_bucket(tag).await);
    }
    names.push(common::new_bucket("plain").await);

    for name in &names {
        assert!((3..=63).contains(&name.len()), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");

    let client = common::s3_client().await;
    let listed = client.list_buckets().send().await.expect("ListBuckets");
    let listed: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    for name in &names {
        assert!(listed.contains(&name.as_str()), "{name} not in {listed:?}");
    }
}

#[test]
fn server_is_started_once_per_process() {
    let first = common::server();
    let again = std::thread::spawn(|| common::server() as *const common::S3Server as usize)
        .join()
        .unwrap();
    assert_eq!(first as *const common::S3Server as usize, again);
    assert!(first.endpoint.starts_with("http"));
}

#[test]
fn mount_table_lookup() {
    assert!(common::is_mounted(Path::new("/")));
    assert!(common::is_mounted(Path::new("/proc")));
    let dir = tempfile::tempdir().unwrap();
    assert!(!common::is_mounted(dir.path()));
    assert!(!common::is_mounted(&dir.path().join("missing")));
}
